//! A live plugin instance of either kind: a native instance inside the daemon, or a process (a
//! process plugin, or a native plugin in a `ballast worker`). The host's lifecycle and call code
//! is written once against this type.

use std::time::Duration;

use ballast_abi::BallastStats;

use crate::instance::{Instance, PluginFault};
use crate::process::ProcessInstance;
use crate::stream::CallIo;

/// One live instance.
pub(crate) enum Live {
    /// Inside the daemon, behind the vtable.
    Native(Instance),
    /// In a child process, behind the control protocol.
    Process(ProcessInstance),
}

impl Live {
    pub(crate) fn start(&self, wait: Duration) -> Result<(), PluginFault> {
        match self {
            Live::Native(i) => i.start(wait),
            Live::Process(_) => Ok(()),
        }
    }

    pub(crate) fn set_level(&self, level: u32, wait: Duration) -> Result<(), PluginFault> {
        match self {
            Live::Native(i) => i.set_level(level, wait),
            Live::Process(p) => p.set_level(level, wait),
        }
    }

    pub(crate) fn drain(&self, deadline: Duration) -> Result<(), PluginFault> {
        match self {
            Live::Native(i) => i.drain(deadline),
            Live::Process(p) => p.drain(deadline),
        }
    }

    pub(crate) fn stop(&self, wait: Duration) -> Result<(), PluginFault> {
        match self {
            Live::Native(i) => i.stop(wait),
            Live::Process(p) => p.stop(),
        }
    }

    pub(crate) fn checkpoint(&self, wait: Duration) -> Result<Option<Vec<u8>>, PluginFault> {
        match self {
            Live::Native(i) => i.checkpoint(wait),
            Live::Process(p) => p.checkpoint(wait),
        }
    }

    pub(crate) fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginFault> {
        match self {
            Live::Native(i) => i.call(request),
            Live::Process(p) => p.call(request),
        }
    }

    /// A streamed call: the chunks go to `io` as the plugin produces them; the answer is what
    /// the plugin returned last (empty for a plugin that streamed everything). A plugin that
    /// does not stream has its whole answer sent as one chunk.
    pub(crate) fn call_stream(
        &self,
        request: &[u8],
        io: &mut CallIo,
    ) -> Result<Vec<u8>, PluginFault> {
        match self {
            Live::Native(i) => i.call_stream(request, io),
            Live::Process(p) => p.call_stream(request, io),
        }
    }

    /// A native plugin's health check; a process reports its health itself.
    pub(crate) fn health(&self) -> Result<String, PluginFault> {
        match self {
            Live::Native(i) => i.health(),
            Live::Process(_) => Ok(String::new()),
        }
    }

    /// A native plugin's own figures.
    pub(crate) fn stats(&self) -> Option<BallastStats> {
        match self {
            Live::Native(i) => i.stats(),
            Live::Process(_) => None,
        }
    }

    /// Stops the process (SIGSTOP); a native instance only stops being routed calls.
    pub(crate) fn suspend(&self) -> Result<(), PluginFault> {
        match self {
            Live::Native(_) => Ok(()),
            Live::Process(p) => p.suspend(),
        }
    }

    /// Continues the process (SIGCONT).
    pub(crate) fn resume(&self) -> Result<(), PluginFault> {
        match self {
            Live::Native(_) => Ok(()),
            Live::Process(p) => p.resume(),
        }
    }

    /// The process instance, for a plugin that runs in one.
    pub(crate) fn process(&self) -> Option<&ProcessInstance> {
        match self {
            Live::Native(_) => None,
            Live::Process(p) => Some(p),
        }
    }
}
