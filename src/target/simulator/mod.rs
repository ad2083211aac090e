//! The Target simulator (work in progress).
