//! The monitor core ([`gw_core::Monitor`]) called in the same process, with no socket or
//! hypervisor in between: for simulated gateways (`gw-loadgen`) and test tools that must play a
//! gateway with keys of their own (`gw-agent-rogue`). Its identity says whatever the caller's
//! [`gw_core::Config`] says; simulations use `InsecureSoftwareMonitor`.

use std::{cell::RefCell, rc::Rc};

use gw_abi::Function;
use gw_core::{Caller, Monitor};

use crate::{CallResult, Transport};

/// A monitor core shared by the clients made for it (the agent reconnects with a new client
/// each session), calling as one fixed program.
pub struct InProcess<const LOG: usize, const SLOTS: usize> {
    monitor: Rc<RefCell<Box<Monitor<LOG, SLOTS>>>>,
    caller: Caller,
}

impl<const LOG: usize, const SLOTS: usize> InProcess<LOG, SLOTS> {
    /// Calls into `monitor` as `caller`.
    pub fn new(monitor: Rc<RefCell<Box<Monitor<LOG, SLOTS>>>>, caller: Caller) -> Self {
        Self { monitor, caller }
    }
}

impl<const LOG: usize, const SLOTS: usize> Transport for InProcess<LOG, SLOTS> {
    fn call(
        &mut self,
        function: Function,
        request: &[u8],
        response: &mut [u8],
    ) -> CallResult<usize> {
        Ok(self
            .monitor
            .borrow_mut()
            .handle(&self.caller, function, request, response)?)
    }
}
