//! The `clawbus` command run to its end, as the tests of its subcommands
//! (`cli`, `import`) read it.

use clawbus_testkit::clawbus;

/// Runs `clawbus` with `args`; (exit code, stdout, stderr).
pub(crate) fn run<S: AsRef<str>>(args: &[S]) -> (i32, String, String) {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let output = clawbus(&args);
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("UTF-8 output");
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}
