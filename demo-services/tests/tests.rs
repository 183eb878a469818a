//! Integration tests of the workloads: real servers on loopback, real clients, one module per area.

mod common;
mod deathstar;
mod dns;
mod echo;
mod ftpstore;
mod logship;
mod ship;
