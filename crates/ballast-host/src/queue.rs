//! The queue between a plugin's callers and its call workers, which wakes a sleeping worker only
//! when no worker is awake to take the job.
//!
//! A worker that finishes a call keeps looking for the next one for a moment ([`LOOK`]) before it
//! sleeps, unless another one is already looking, so back-to-back calls find a worker awake and
//! cost no wake-up. A plain channel with several workers blocked on it wakes one of them on every
//! send, even when another one is awake and takes the job; on a busy machine that wake-up (a
//! futex syscall, then a thread that runs only to go back to sleep) costs more than the call.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a worker keeps looking for a job before it sleeps.
pub(crate) const LOOK: Duration = Duration::from_micros(50);

/// What the sending and the receiving side share.
struct Shared {
    /// Workers looking for a job, less the jobs sent since that counted on one of them. Never
    /// more than the workers actually looking, so a job that counts on one is always taken.
    looking: AtomicU32,
    /// Set when the sending side is gone: sleeping workers wake up and leave.
    closed: AtomicBool,
    /// The workers asleep; held to sleep and to wake a sleeper, so that no wake-up falls between
    /// a worker's last look and its sleep.
    sleeping: Mutex<u32>,
    wake: Condvar,
}

/// The sending side; dropping it lets the workers leave once the queue is empty.
pub(crate) struct Sender<T> {
    jobs: crossbeam_channel::Sender<T>,
    shared: Arc<Shared>,
}

/// The receiving side, one clone per worker.
pub(crate) struct Receiver<T> {
    jobs: crossbeam_channel::Receiver<T>,
    shared: Arc<Shared>,
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver {
            jobs: self.jobs.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// A new queue.
pub(crate) fn queue<T>() -> (Sender<T>, Receiver<T>) {
    let (sender, receiver) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared {
        looking: AtomicU32::new(0),
        closed: AtomicBool::new(false),
        sleeping: Mutex::new(0),
        wake: Condvar::new(),
    });
    (
        Sender {
            jobs: sender,
            shared: Arc::clone(&shared),
        },
        Receiver {
            jobs: receiver,
            shared,
        },
    )
}

impl<T> Sender<T> {
    /// Queues `job`, waking a sleeping worker unless one that is awake will take it. Gives the job
    /// back if every worker is gone.
    pub(crate) fn send(&self, job: T) -> Result<(), T> {
        self.jobs
            .send(job)
            .map_err(|crossbeam_channel::SendError(job)| job)?;
        let counted_on_a_looking_worker = self
            .shared
            .looking
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !counted_on_a_looking_worker {
            let sleeping = self
                .shared
                .sleeping
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if *sleeping > 0 {
                self.shared.wake.notify_one();
            }
        }
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let _sleeping = self
            .shared
            .sleeping
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.shared.wake.notify_all();
    }
}

impl<T> Receiver<T> {
    /// The next job: looks for [`LOOK`], then sleeps until one is sent. `None` once the sending
    /// side is gone and the queue is empty.
    pub(crate) fn recv(&self) -> Option<T> {
        self.recv_after_looking(LOOK)
    }

    /// [`Receiver::recv`], looking for `look` before it sleeps.
    fn recv_after_looking(&self, look: Duration) -> Option<T> {
        let shared = &*self.shared;
        // One worker looking is enough to take the next job without a wake-up; more would only
        // spin on the CPUs the callers need.
        let alone = shared.looking.fetch_add(1, Ordering::SeqCst) == 0;
        let job = self.look(if alone { look } else { Duration::ZERO });
        // Stop counting as looking before the last look below, so that a job sent while this
        // worker still counted is found by that look.
        let _ = shared
            .looking
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if job.is_some() {
            return job;
        }
        let mut sleeping = shared.sleeping.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match self.jobs.try_recv() {
                Ok(job) => return Some(job),
                Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
                Err(crossbeam_channel::TryRecvError::Empty) => {}
            }
            if shared.closed.load(Ordering::SeqCst) {
                return None;
            }
            *sleeping += 1;
            sleeping = shared
                .wake
                .wait(sleeping)
                .unwrap_or_else(|p| p.into_inner());
            *sleeping -= 1;
        }
    }

    /// A job sent within `look`, if any.
    fn look(&self, look: Duration) -> Option<T> {
        let until = Instant::now() + look;
        loop {
            match self.jobs.try_recv() {
                Ok(job) => return Some(job),
                Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
                Err(crossbeam_channel::TryRecvError::Empty) => {}
            }
            if Instant::now() >= until {
                return None;
            }
            // Yield rather than spin: the caller about to send the next job may be waiting for
            // this CPU, and with a CPU to spare a yield costs about as much as a short spin.
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_sent_to_sleeping_workers_wakes_one() {
        let (sender, receiver) = queue::<u32>();
        let (done, answers) = std::sync::mpsc::channel();
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let receiver = receiver.clone();
                let done = done.clone();
                std::thread::spawn(move || {
                    while let Some(job) = receiver.recv() {
                        done.send(job).unwrap();
                    }
                })
            })
            .collect();
        for job in 0..10 {
            wait_until_asleep(&sender, 3);
            sender.send(job).unwrap();
            assert_eq!(
                answers.recv_timeout(Duration::from_secs(10)),
                Ok(job),
                "job {job} was not taken"
            );
        }
        drop(sender);
        for worker in workers {
            worker.join().unwrap();
        }
    }

    /// Waits until `n` workers sleep; fails the test after 10 s.
    fn wait_until_asleep<T>(sender: &Sender<T>, n: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sleeping = *sender.shared.sleeping.lock().unwrap();
            if sleeping == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{sleeping} of {n} workers asleep after 10 s"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn jobs_sent_while_one_worker_looks_wake_the_sleeping_ones() {
        // Three workers sleep and this thread looks for a job, as a worker that has just finished
        // one does. Of four jobs, one counts on this thread and three must wake the sleepers,
        // which hold theirs, so exactly one job is left for this thread.
        let (sender, receiver) = queue::<()>();
        let started = Arc::new((Mutex::new(0u32), Condvar::new()));
        let release = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let receiver = receiver.clone();
                let started = Arc::clone(&started);
                let release = Arc::clone(&release);
                std::thread::spawn(move || {
                    while receiver.recv_after_looking(Duration::ZERO).is_some() {
                        let (count, changed) = &*started;
                        *count.lock().unwrap() += 1;
                        changed.notify_all();
                        let deadline = Instant::now() + Duration::from_secs(10);
                        while !release.load(Ordering::SeqCst) && Instant::now() < deadline {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        wait_until_asleep(&sender, 3);
        sender.shared.looking.fetch_add(1, Ordering::SeqCst);
        for _ in 0..4 {
            sender.send(()).unwrap();
        }
        let (count, changed) = &*started;
        let count = *changed
            .wait_timeout_while(count.lock().unwrap(), Duration::from_secs(10), |n| *n < 3)
            .unwrap()
            .0;
        assert_eq!(
            count, 3,
            "{count} of 3 sleeping workers took a job within 10 s"
        );
        assert!(
            receiver.jobs.try_recv().is_ok(),
            "the job that counted on this thread was taken by a worker"
        );
        release.store(true, Ordering::SeqCst);
        drop(sender);
        for worker in workers {
            worker.join().unwrap();
        }
    }

    #[test]
    fn workers_leave_when_the_sender_is_gone_after_taking_what_was_sent() {
        let (sender, receiver) = queue::<u32>();
        sender.send(1).unwrap();
        sender.send(2).unwrap();
        drop(sender);
        assert_eq!(receiver.recv(), Some(1));
        assert_eq!(receiver.recv(), Some(2));
        assert_eq!(receiver.recv(), None);
    }

    #[test]
    fn a_send_with_no_worker_left_gives_the_job_back() {
        let (sender, receiver) = queue::<u32>();
        drop(receiver);
        assert_eq!(sender.send(7), Err(7));
    }
}
