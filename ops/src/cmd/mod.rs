pub(crate) mod audit;
pub(crate) mod bench;
pub(crate) mod device;
pub(crate) mod gaen;
pub(crate) mod keys;
pub(crate) mod log;
pub(crate) mod server;
pub(crate) mod sim;
