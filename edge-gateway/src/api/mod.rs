//! One module per API the gateway serves.

pub(crate) mod centre;
pub(crate) mod device;
pub(crate) mod exports;
pub(crate) mod health;
pub(crate) mod operator;
pub(crate) mod publish;
pub(crate) mod support;
