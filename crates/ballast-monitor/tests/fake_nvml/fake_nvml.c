/*
 * A fake libnvidia-ml.so for ballast-monitor's tests: it exports the NVML functions that
 * nvml-wrapper calls for a sample, with values scripted in a file named fake-nvml.conf in the
 * same directory as the library. Each test copies the library into its own directory, so that
 * every copy is loaded separately and has its own script.
 *
 * Script lines ("#" starts a comment):
 *   init RC                  return code of nvmlInit_v2 (0 = success, 9 = driver not loaded)
 *   count N                  number of devices (at most 8)
 *   I name TEXT              device I's name
 *   I memory_total BYTES     device I's memory
 *   I memory_used BYTES
 *   I utilization PERCENT
 *   I temperature CELSIUS
 *   I power_mw MILLIWATTS
 *   I temperature_rc RC      return code of its temperature call (3 = not supported)
 *   I power_rc RC            return code of its power call
 *
 * The processes on each device are in a second file, fake-nvml-processes in the same directory,
 * read again on every call that lists them, so that a test can change them between samples
 * (write a new file and rename it over the old one, so that no call reads half a file):
 *   DEVICE PID BYTES KIND    a process with a context of KIND (compute or graphics) holding
 *                            BYTES of GPU memory ("-": NVML_VALUE_NOT_AVAILABLE, as the driver
 *                            reports it when it does not know); a process with both kinds of
 *                            context is listed once for each, as the driver lists it
 *   DEVICE fail KIND RC      the call listing DEVICE's processes of KIND returns RC
 * At most 64 processes per device and kind are kept.
 *
 * nvml-wrapper 0.13 lists processes through nvmlDeviceGet{Compute,Graphics}RunningProcesses_v3
 * with the two-call protocol of the real library: a first call with *infoCount == 0 and a NULL
 * buffer asks for the count (NVML_ERROR_INSUFFICIENT_SIZE with the count, or success when there
 * is none), the second passes a buffer of *infoCount nvmlProcessInfo_t and gets the entries and
 * their number. A buffer too small for every entry gets NVML_ERROR_INSUFFICIENT_SIZE again.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEVICES 8
#define MAX_PROCESSES 64
#define NVML_VALUE_NOT_AVAILABLE_ULL 0xFFFFFFFFFFFFFFFFULL
#define NO_INSTANCE 0xFFFFFFFFu
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_ARGUMENT_VERSION_MISMATCH 25

struct fake_device {
    char name[96];
    unsigned long long memory_total;
    unsigned long long memory_used;
    unsigned int utilization;
    unsigned int temperature;
    unsigned int power_mw;
    int temperature_rc;
    int power_rc;
};

typedef struct fake_device *nvmlDevice_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

/* nvmlProcessInfo_t (nvmlProcessInfo_v2_t) as NVML 11.4 and later define it. */
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

static struct fake_device devices[MAX_DEVICES];
static unsigned int device_count = 0;
static int init_rc = 0;
static int initialized = 0;

/* Opens the file `name` in the directory this library was loaded from, or returns NULL. */
static FILE *open_beside_library(const char *name) {
    Dl_info info;
    char path[4096];
    if (dladdr((void *)open_beside_library, &info) == 0 || info.dli_fname == NULL) {
        return NULL;
    }
    snprintf(path, sizeof path, "%s", info.dli_fname);
    char *slash = strrchr(path, '/');
    if (slash == NULL) {
        return NULL;
    }
    snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path), "%s", name);
    return fopen(path, "r");
}

static void load_script(void) {
    char line[512];
    memset(devices, 0, sizeof devices);
    device_count = 0;
    init_rc = 0;
    FILE *file = open_beside_library("fake-nvml.conf");
    if (file == NULL) {
        return;
    }
    while (fgets(line, sizeof line, file) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0') {
            continue;
        }
        char key[64];
        unsigned int index;
        int consumed = 0;
        if (sscanf(line, "init %d", &init_rc) == 1) {
            continue;
        }
        if (sscanf(line, "count %u", &device_count) == 1) {
            if (device_count > MAX_DEVICES) {
                device_count = MAX_DEVICES;
            }
            continue;
        }
        if (sscanf(line, "%u %63s %n", &index, key, &consumed) < 2 || index >= MAX_DEVICES) {
            continue;
        }
        struct fake_device *d = &devices[index];
        const char *value = line + consumed;
        if (strcmp(key, "name") == 0) {
            snprintf(d->name, sizeof d->name, "%s", value);
        } else if (strcmp(key, "memory_total") == 0) {
            d->memory_total = strtoull(value, NULL, 10);
        } else if (strcmp(key, "memory_used") == 0) {
            d->memory_used = strtoull(value, NULL, 10);
        } else if (strcmp(key, "utilization") == 0) {
            d->utilization = (unsigned int)strtoul(value, NULL, 10);
        } else if (strcmp(key, "temperature") == 0) {
            d->temperature = (unsigned int)strtoul(value, NULL, 10);
        } else if (strcmp(key, "power_mw") == 0) {
            d->power_mw = (unsigned int)strtoul(value, NULL, 10);
        } else if (strcmp(key, "temperature_rc") == 0) {
            d->temperature_rc = atoi(value);
        } else if (strcmp(key, "power_rc") == 0) {
            d->power_rc = atoi(value);
        }
    }
    fclose(file);
}

int nvmlInit_v2(void) {
    load_script();
    if (init_rc == 0) {
        initialized = 1;
    }
    return init_rc;
}

int nvmlShutdown(void) {
    initialized = 0;
    return NVML_SUCCESS;
}

int nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialized) {
        return NVML_ERROR_UNINITIALIZED;
    }
    if (count == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    *count = device_count;
    return NVML_SUCCESS;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!initialized) {
        return NVML_ERROR_UNINITIALIZED;
    }
    if (device == NULL || index >= device_count) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    *device = &devices[index];
    return NVML_SUCCESS;
}

int nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    if (device == NULL || name == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (strlen(device->name) + 1 > length) {
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    snprintf(name, length, "%s", device->name);
    return NVML_SUCCESS;
}

/* The memory in use a test set while the library runs: lines "DEVICE BYTES" in
 * fake-nvml-memory beside the library, read again on every call; a device it does not name keeps
 * its scripted figure. */
static unsigned long long memory_used_now(nvmlDevice_t device) {
    unsigned long long used = device->memory_used;
    FILE *file = open_beside_library("fake-nvml-memory");
    if (file == NULL) {
        return used;
    }
    char line[128];
    while (fgets(line, sizeof line, file) != NULL) {
        unsigned int index;
        unsigned long long bytes;
        if (sscanf(line, "%u %llu", &index, &bytes) == 2 && index < MAX_DEVICES &&
            &devices[index] == device) {
            used = bytes;
        }
    }
    fclose(file);
    return used;
}

int nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    if (device == NULL || memory == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if ((memory->version >> 24) != 2 || (memory->version & 0xffffff) != sizeof(nvmlMemory_v2_t)) {
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    }
    unsigned long long used = memory_used_now(device);
    memory->total = device->memory_total;
    memory->reserved = 0;
    memory->used = used;
    memory->free = device->memory_total > used
                       ? device->memory_total - used
                       : 0;
    return NVML_SUCCESS;
}

int nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    if (device == NULL || utilization == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    utilization->gpu = device->utilization;
    utilization->memory = 0;
    return NVML_SUCCESS;
}

int nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int *temperature) {
    (void)sensor;
    if (device == NULL || temperature == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (device->temperature_rc != 0) {
        return device->temperature_rc;
    }
    *temperature = device->temperature;
    return NVML_SUCCESS;
}

int nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    if (device == NULL || power == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (device->power_rc != 0) {
        return device->power_rc;
    }
    *power = device->power_mw;
    return NVML_SUCCESS;
}

/*
 * Reads the processes of `device_index` with a context of `kind` from fake-nvml-processes into
 * `out` (at most MAX_PROCESSES) and returns how many there are, or sets *fail_rc when the script
 * makes the call fail.
 */
static unsigned int load_processes(unsigned int device_index, const char *kind,
                                   nvmlProcessInfo_t *out, int *fail_rc) {
    char line[512];
    unsigned int n = 0;
    *fail_rc = 0;
    FILE *file = open_beside_library("fake-nvml-processes");
    if (file == NULL) {
        return 0;
    }
    while (fgets(line, sizeof line, file) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0') {
            continue;
        }
        unsigned int index;
        char second[32];
        char third[32];
        char fourth[32];
        if (sscanf(line, "%u %31s %31s %31s", &index, second, third, fourth) != 4 ||
            index != device_index) {
            continue;
        }
        if (strcmp(second, "fail") == 0) {
            if (strcmp(third, kind) == 0) {
                *fail_rc = atoi(fourth);
            }
            continue;
        }
        if (strcmp(fourth, kind) != 0 || n >= MAX_PROCESSES) {
            continue;
        }
        out[n].pid = (unsigned int)strtoul(second, NULL, 10);
        out[n].usedGpuMemory = strcmp(third, "-") == 0 ? NVML_VALUE_NOT_AVAILABLE_ULL
                                                       : strtoull(third, NULL, 10);
        out[n].gpuInstanceId = NO_INSTANCE;
        out[n].computeInstanceId = NO_INSTANCE;
        n++;
    }
    fclose(file);
    return n;
}

/* The two-call protocol of NVML's process lists, over the scripted entries of `kind`. */
static int running_processes(nvmlDevice_t device, const char *kind, unsigned int *info_count,
                             nvmlProcessInfo_t *infos) {
    nvmlProcessInfo_t found[MAX_PROCESSES];
    int fail_rc;
    if (!initialized) {
        return NVML_ERROR_UNINITIALIZED;
    }
    if (device == NULL || info_count == NULL || device < devices ||
        device >= devices + device_count) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    unsigned int n = load_processes((unsigned int)(device - devices), kind, found, &fail_rc);
    if (fail_rc != 0) {
        return fail_rc;
    }
    if (*info_count < n) {
        *info_count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    if (n > 0 && infos == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (n > 0) {
        memcpy(infos, found, n * sizeof found[0]);
    }
    *info_count = n;
    return NVML_SUCCESS;
}

int nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                            nvmlProcessInfo_t *infos) {
    return running_processes(device, "compute", infoCount, infos);
}

int nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                             nvmlProcessInfo_t *infos) {
    return running_processes(device, "graphics", infoCount, infos);
}
