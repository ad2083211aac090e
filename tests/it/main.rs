//! The integration test binary: every suite that drives the program over real sockets.

mod simulator;
