//! Files on disk: atomic writes and private modes ([`atomic`]), the memory file
//! ([`memory_file`]), host and unified files in a folder ([`files`]), and what a
//! repository keeps on this machine only ([`state`]).

pub mod atomic;
pub mod files;
pub mod memory_file;
pub mod state;
