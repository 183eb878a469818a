pub mod resolve;
