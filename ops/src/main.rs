//! `hotaru`: the one binary. Thin: parse the command line, call `hotaru_ops`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hotaru_ops::main()
}
