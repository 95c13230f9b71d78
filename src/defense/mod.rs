//! Defenses, one file per method: [`patcher`] (sequential reference) and [`parallel`]
//! (the parallel algorithm over [`collective`] all-reduces).

pub mod collective;
pub mod parallel;
pub mod patcher;
