//! The `tovlog` binary: parse the command line, load the configuration, serve.

fn main() -> anyhow::Result<()> {
    // Before any thread exists (see the function's doc).
    tovlog_storage::tune_allocator();
    tovlog::cli::run()
}
