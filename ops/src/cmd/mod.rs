pub(crate) mod bench;
pub(crate) mod log;
