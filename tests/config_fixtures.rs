//! `check-config` against every file of tests/fixtures/config/invalid (exit 64, the exact
//! problems of its `.expected` file) and against the shipped valid files (exit 0, redacted).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use common::run_to_end;

#[test]
fn every_invalid_fixture_exits_64_with_exactly_its_expected_problems() {
    let dir = "tests/fixtures/config/invalid";
    let mut count = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries.iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let expected = std::fs::read_to_string(path.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{} has no .expected file", path.display()));
        let (code, stdout, stderr) = run_to_end(&["check-config", "--config", path.to_str().unwrap()], &[]);
        assert_eq!(code, 64, "{}: exit code; stderr:\n{stderr}", path.display());
        assert_eq!(stderr, expected, "{}: problems differ", path.display());
        assert!(stdout.is_empty(), "{}: nothing on stdout for an invalid config", path.display());
        // Every problem line names the file, and all but document-level ones a line and a path.
        for line in stderr.lines().skip(1) {
            assert!(line.starts_with(path.to_str().unwrap()), "{line}");
        }
        count += 1;
    }
    assert!(count >= 15, "only {count} fixtures found");
}

#[test]
fn shipped_configs_are_valid_and_shown_redacted() {
    let key = "sk-canary-check-config-0042";
    for file in ["config/sentinel.yaml", "config/example.yaml"] {
        let (code, stdout, stderr) = run_to_end(&["check-config", "--config", file], &[("MODELSLAB_API_KEY", key)]);
        assert_eq!(code, 0, "{file}: {stderr}");
        assert!(stderr.contains("configuration is valid"), "{stderr}");
        assert!(stdout.contains("api_key: <redacted>"), "{file}:\n{stdout}");
        assert!(!stdout.contains(key) && !stderr.contains(key), "{file}: the key was printed");
    }
}

#[test]
fn config_path_comes_from_the_environment_when_not_given() {
    let (code, _, stderr) =
        run_to_end(&["check-config"], &[("MODELSLAB_SENTINEL_CONFIG", "tests/fixtures/config/invalid/bad_size.yaml")]);
    assert_eq!(code, 64);
    assert!(stderr.contains("bad_size.yaml:5: proxy.max_request_body"), "{stderr}");
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    let (code, _, stderr) = run_to_end(&["frobnicate"], &[]);
    assert_eq!(code, 64, "{stderr}");
    let (code, _, stderr) = run_to_end(&["run", "--grace-period", "soon"], &[]);
    assert_eq!(code, 64, "{stderr}");
    let (code, stdout, _) = run_to_end(&["--help"], &[]);
    assert_eq!(code, 0);
    for command in ["run", "check-config", "sim", "demo"] {
        assert!(stdout.contains(command), "--help lists {command}");
    }
    let (code, _, stderr) = run_to_end(&["check-config", "--config", "/nonexistent/sentinel.yaml"], &[]);
    assert_eq!(code, 64);
    assert!(stderr.contains("cannot read config file /nonexistent/sentinel.yaml"), "{stderr}");
}
