mod manifest;

fn main() {}
