//! Resource samplers (memory, CPU, PSI, cgroup, disk, GPU) and the MonitorActor.
