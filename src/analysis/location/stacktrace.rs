//! The first application frame of a `code.stacktrace`: the frame formats of Python, Java,
//! .NET, Node, Go and Ruby read line by line, and frames of the runtime's standard library, of
//! installed packages and of OpenTelemetry itself skipped, so that a finding points at the
//! user's code rather than at the driver or the tracer that made the span.
//!
//! Invariant: bounded work: at most [`MAX_BYTES`] of the text and [`MAX_FRAMES`] frames are
//! read, whatever the span carries; an unreadable line is skipped, never an error.

use super::CodeLocation;

/// Bytes of a stack trace read at most: the innermost frames come first (Python's last), and a
/// span's stack trace is not worth more than this per finding span.
pub const MAX_BYTES: usize = 64 * 1024;

/// Frames read at most.
pub const MAX_FRAMES: usize = 200;

/// Path fragments of frames outside the application: package managers' install directories,
/// standard libraries, runtimes' internal pseudo-files and OpenTelemetry's own packages.
/// Compared against the path with `/` separators, lower-cased.
const LIBRARY_PATHS: &[&str] = &[
    "site-packages/",
    "dist-packages/",
    "node_modules/",
    "/vendor/",
    "/gems/",
    "/rubygems/",
    "/lib/ruby/",
    "/lib/python",
    "/usr/lib/",
    "/pkg/mod/",
    "opentelemetry",
];

/// Path prefixes of runtime internals that name no file of the application.
const LIBRARY_PATH_PREFIXES: &[&str] = &["node:", "internal/", "<"];

/// Function prefixes of standard libraries, common frameworks and drivers that install no
/// files of their own to recognise (JVM and .NET frames name a class, not a path), and of
/// OpenTelemetry itself.
const LIBRARY_FUNCTIONS: &[&str] = &[
    "java.",
    "javax.",
    "jdk.",
    "sun.",
    "com.sun.",
    "kotlin.",
    "kotlinx.",
    "scala.",
    "io.opentelemetry.",
    "org.springframework.",
    "org.hibernate.",
    "org.apache.",
    "org.postgresql.",
    "com.mysql.",
    "com.zaxxer.",
    "io.netty.",
    "reactor.",
    "System.",
    "Microsoft.",
    "OpenTelemetry.",
    "Npgsql.",
    "go.opentelemetry.io/",
];

/// One frame as a line names it.
#[derive(Debug, PartialEq, Eq)]
struct Frame<'a> {
    file: Option<&'a str>,
    line: Option<u32>,
    function: Option<&'a str>,
    /// Go's standard library is told by its package path, which has no dot, beside a file
    /// under the toolchain's `src/` directory of that path.
    go: bool,
}

/// The innermost application frame of `trace`, if any line of it names one.
pub fn first_application_frame(trace: &str) -> Option<CodeLocation> {
    let trace = head(trace, MAX_BYTES);
    // Python prints the most recent call last; every other runtime first.
    let python_order = trace.contains("Traceback (most recent call last)")
        || trace.trim_start().starts_with("File \"");
    let mut found = None;
    for frame in frames(trace).take(MAX_FRAMES) {
        if !is_application(&frame) {
            continue;
        }
        found = Some(frame);
        if !python_order {
            break;
        }
    }
    let frame = found?;
    let location = CodeLocation {
        file: frame.file.map(str::to_owned),
        line: frame.line.filter(|_| frame.file.is_some()),
        function: frame.function.map(str::to_owned),
    };
    (location.file.is_some() || location.function.is_some()).then_some(location)
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The frames of a stack trace, in its order.
fn frames(trace: &str) -> impl Iterator<Item = Frame<'_>> {
    // Go names the function on one line and its file on the next, indented by a tab.
    let mut go_function: Option<&str> = None;
    trace.lines().filter_map(move |line| {
        if let Some(indented) = line.strip_prefix('\t')
            && let Some(function) = go_function.take()
            && let Some((file, line)) = go_file(indented)
        {
            return Some(Frame {
                file: Some(file),
                line: Some(line),
                function: Some(function),
                go: true,
            });
        }
        let text = line.trim();
        let frame = python(text)
            .or_else(|| node(text))
            .or_else(|| java(text))
            .or_else(|| dotnet(text))
            .or_else(|| ruby(text));
        go_function = match frame {
            Some(_) => None,
            None => go_function_line(text),
        };
        frame
    })
}

/// `File "app/policies.py", line 88, in load_rules`.
fn python(text: &str) -> Option<Frame<'_>> {
    let rest = text.strip_prefix("File \"")?;
    let (file, rest) = rest.split_once("\", line ")?;
    let (line, function) = match rest.split_once(", in ") {
        Some((line, function)) => (line, Some(function.trim())),
        None => (rest, None),
    };
    Some(Frame {
        file: Some(file),
        line: line.trim().parse().ok(),
        function,
        go: false,
    })
}

/// `at Acme.Policies.Load(String name) in /src/Policies.cs:line 88`. A .NET frame without
/// symbols (`at System.Threading.Tasks.Task.Execute()`) reads as a Java frame without a file.
fn dotnet(text: &str) -> Option<Frame<'_>> {
    let rest = text.strip_prefix("at ")?;
    let (head, line) = rest.rsplit_once(":line ")?;
    let (method, file) = head.rsplit_once(" in ")?;
    let function = method.split_once('(').map_or(method, |(name, _)| name);
    if function.contains(' ') {
        return None;
    }
    Some(Frame {
        file: Some(file),
        line: line.trim().parse().ok(),
        function: Some(function),
        go: false,
    })
}

/// `at loadRules (/app/src/policies.js:88:13)`, `at async loadRules (…)`, `at /app/x.js:3:1`.
fn node(text: &str) -> Option<Frame<'_>> {
    let rest = text.strip_prefix("at ")?;
    let (function, place) = match rest.strip_suffix(')').and_then(|r| r.rsplit_once(" (")) {
        Some((function, place)) => (Some(function), place),
        None => (None, rest),
    };
    let (file, line, _column) = node_place(place)?;
    let function = function.map(|name| {
        let name = name.strip_prefix("async ").unwrap_or(name);
        name.strip_prefix("new ").unwrap_or(name)
    });
    Some(Frame {
        file: Some(file),
        line: Some(line),
        function,
        go: false,
    })
}

/// `path:line:column`.
fn node_place(place: &str) -> Option<(&str, u32, u32)> {
    let (rest, column) = place.rsplit_once(':')?;
    let (file, line) = rest.rsplit_once(':')?;
    Some((file, line.parse().ok()?, column.parse().ok()?))
}

/// `at com.acme.Policies.load(Policies.java:88)`, with an optional class loader or module
/// before a `/` (`app//…`, `java.base/…`), or `(Native Method)`, `(Unknown Source)`; also a
/// .NET frame without symbols, whose argument list takes the file's place.
fn java(text: &str) -> Option<Frame<'_>> {
    let rest = text.strip_prefix("at ")?.strip_suffix(')')?;
    let (method, place) = rest.split_once('(')?;
    if method.contains(' ') {
        return None;
    }
    let method = method.rsplit_once('/').map_or(method, |(_, name)| name);
    let (file, line) = match place.rsplit_once(':') {
        Some((file, line)) => (Some(file), line.parse().ok()),
        None if place.contains('.') && !place.contains(' ') => (Some(place), None),
        None => (None, None),
    };
    Some(Frame {
        file,
        line,
        function: Some(method),
        go: false,
    })
}

/// `app/models/policy.rb:88:in 'load_rules'` (or with a backtick before the name, as Ruby
/// before 3.4 writes it), optionally after `from `.
fn ruby(text: &str) -> Option<Frame<'_>> {
    let text = text.strip_prefix("from ").unwrap_or(text);
    let (place, function) = text.split_once(":in ")?;
    let (file, line) = place.rsplit_once(':')?;
    let function = function.trim_matches(|c| c == '\'' || c == '`' || c == '"');
    Some(Frame {
        file: Some(file),
        line: Some(line.parse().ok()?),
        function: (!function.is_empty()).then_some(function),
        go: false,
    })
}

/// A Go function line: `main.loadRules(0xc000010000)` or `created by main.main in goroutine 1`,
/// the name without its arguments.
fn go_function_line(text: &str) -> Option<&str> {
    let text = text.strip_prefix("created by ").unwrap_or(text);
    let text = text
        .split_once(" in goroutine ")
        .map_or(text, |(name, _)| name);
    let name = match text.rfind('(') {
        Some(open) if text.ends_with(')') && open > 0 => &text[..open],
        _ => text,
    };
    (!name.is_empty() && !name.contains(' ') && name.contains('.')).then_some(name)
}

/// A Go file line after its tab: `/src/app/policies.go:88 +0x1d`.
fn go_file(text: &str) -> Option<(&str, u32)> {
    let place = text.split_once(" +0x").map_or(text, |(place, _)| place);
    let (file, line) = place.trim().rsplit_once(':')?;
    Some((file, line.parse().ok()?))
}

/// Whether a frame is the application's own code.
fn is_application(frame: &Frame<'_>) -> bool {
    if let Some(file) = frame.file {
        let path = file.replace('\\', "/").to_lowercase();
        if LIBRARY_PATHS.iter().any(|part| path.contains(part))
            || LIBRARY_PATH_PREFIXES
                .iter()
                .any(|prefix| path.starts_with(prefix))
        {
            return false;
        }
    }
    if let Some(function) = frame.function {
        if LIBRARY_FUNCTIONS
            .iter()
            .any(|prefix| function.starts_with(prefix))
        {
            return false;
        }
        if frame.go && is_go_standard_library(function, frame.file.unwrap_or_default()) {
            return false;
        }
    }
    true
}

/// Whether a Go frame is the standard library's: its package path (`net/http` of
/// `net/http.(*conn).serve`) has no dot in its first element, and its file lies in the
/// toolchain's `src/` directory of that path. A module of the application named without a dot
/// (`module shop`) is told apart by its file, which is not under `src/shop/`.
fn is_go_standard_library(function: &str, file: &str) -> bool {
    let last_slash = function.rfind('/').map_or(0, |at| at + 1);
    let package_end = function[last_slash..]
        .find('.')
        .map_or(function.len(), |at| last_slash + at);
    let package = &function[..package_end];
    let first = package.split('/').next().unwrap_or_default();
    package != "main" && !first.contains('.') && file.contains(&format!("/src/{package}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(trace: &str, expected: &str) {
        let found = first_application_frame(trace).map(|location| location.describe());
        assert_eq!(found.as_deref(), Some(expected), "{trace}");
    }

    #[test]
    fn python_takes_the_last_application_frame_of_a_traceback() {
        check(
            r#"Traceback (most recent call last):
  File "/usr/local/lib/python3.12/threading.py", line 1010, in run
    self._target(*self._args, **self._kwargs)
  File "/srv/app/.venv/lib/python3.12/site-packages/flask/app.py", line 1484, in wsgi_app
    response = self.full_dispatch_request()
  File "app/views.py", line 41, in login
    rules = policies.load_rules(user)
  File "app/policies.py", line 88, in load_rules
    return [db.fetch(rule_id) for rule_id in ids]
  File "/srv/app/.venv/lib/python3.12/site-packages/psycopg/cursor.py", line 732, in execute
    raise ex.with_traceback(None)
  File "/srv/app/.venv/lib/python3.12/site-packages/opentelemetry/instrumentation/dbapi/__init__.py", line 580, in traced_execution
    return query_method(*args, **kwargs)
  File "<frozen importlib._bootstrap>", line 1360, in _find_and_load
"#,
            "app/policies.py:88 in load_rules",
        );
    }

    #[test]
    fn java_skips_the_agent_the_driver_and_the_jdk() {
        check(
            "java.lang.Throwable\n\
             \tat io.opentelemetry.contrib.stacktrace.StackTraceSpanProcessor.onEnd(StackTraceSpanProcessor.java:45)\n\
             \tat io.opentelemetry.sdk.trace.SdkSpan.endInternal(SdkSpan.java:474)\n\
             \tat org.postgresql.jdbc.PgStatement.executeQuery(PgStatement.java:244)\n\
             \tat com.zaxxer.hikari.pool.HikariProxyStatement.executeQuery(HikariProxyStatement.java)\n\
             \tat java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)\n\
             \tat app//com.acme.Policies.load(Policies.java:88)\n\
             \tat com.acme.LoginController.login(LoginController.java:31)\n\
             \tat java.base/java.lang.Thread.run(Thread.java:1583)\n",
            "Policies.java:88 in com.acme.Policies.load",
        );
        check(
            "\tat java.base/java.lang.Object.wait(Native Method)\n\
             \tat com.acme.Native.call(Native Method)\n",
            "in com.acme.Native.call",
        );
    }

    #[test]
    fn dotnet_skips_the_framework() {
        check(
            "   at Npgsql.NpgsqlCommand.ExecuteReader(CommandBehavior behavior)\n\
             \x20  at System.Data.Common.DbCommand.ExecuteReaderAsync(CancellationToken cancellationToken)\n\
             \x20  at OpenTelemetry.Instrumentation.SqlClient.Implementation.Listener.OnStart()\n\
             \x20  at Acme.Policies.Load(String name) in /src/Acme/Policies.cs:line 88\n\
             \x20  at Acme.LoginController.Login() in /src/Acme/LoginController.cs:line 31\n\
             \x20  at Microsoft.AspNetCore.Mvc.Infrastructure.ActionMethodExecutor.Execute()\n",
            "/src/Acme/Policies.cs:88 in Acme.Policies.Load",
        );
    }

    #[test]
    fn node_skips_internals_and_node_modules() {
        check(
            "Error\n\
             \x20   at Span.end (/app/node_modules/@opentelemetry/sdk-trace-base/build/src/Span.js:210:23)\n\
             \x20   at Client._pulseQueryQueue (/app/node_modules/pg/lib/client.js:585:25)\n\
             \x20   at new Promise (<anonymous>)\n\
             \x20   at process.processTicksAndRejections (node:internal/process/task_queues:95:5)\n\
             \x20   at async loadRules (/app/src/policies.js:88:13)\n\
             \x20   at async login (/app/src/login.js:12:3)\n",
            "/app/src/policies.js:88 in loadRules",
        );
        check(
            "Error: boom\n    at node:internal/main/run_main_module:28:49\n    at /app/x.js:3:1\n",
            "/app/x.js:3",
        );
    }

    #[test]
    fn go_pairs_each_function_with_its_file_and_skips_the_standard_library() {
        check(
            "goroutine 7 [running]:\n\
             runtime/debug.Stack()\n\
             \t/usr/local/go/src/runtime/debug/stack.go:26 +0x5e\n\
             go.opentelemetry.io/otel/sdk/trace.(*recordingSpan).End(0xc0001a2000, {0x0, 0x0, 0x0})\n\
             \t/root/go/pkg/mod/go.opentelemetry.io/otel/sdk@v1.28.0/trace/span.go:409 +0x8a\n\
             database/sql.(*DB).QueryContext(0xc000100000, {0x9b1f60, 0xc000090000}, {0x8f2d3a, 0x2f})\n\
             \t/usr/local/go/src/database/sql/sql.go:1749 +0xc5\n\
             shop/policies.LoadRules(...)\n\
             \t/go/src/app/policies/policies.go:88 +0x1d\n\
             net/http.HandlerFunc.ServeHTTP(0xc000012345, {0x9b1f60, 0xc0000a8000}, 0xc0000b2000)\n\
             \t/usr/local/go/src/net/http/server.go:2171 +0x29\n\
             created by net/http.(*Server).Serve in goroutine 1\n\
             \t/usr/local/go/src/net/http/server.go:3285 +0x4b4\n",
            "/go/src/app/policies/policies.go:88 in shop/policies.LoadRules",
        );
    }

    #[test]
    fn ruby_skips_gems_with_either_quote_style() {
        check(
            "/usr/local/bundle/gems/opentelemetry-sdk-1.5.0/lib/opentelemetry/sdk/trace/span.rb:150:in `finish'\n\
             /usr/local/bundle/gems/activerecord-7.1.3/lib/active_record/relation.rb:1014:in `load'\n\
             /usr/local/lib/ruby/3.3.0/monitor.rb:202:in `synchronize'\n\
             app/models/policy.rb:88:in `load_rules'\n\
             app/controllers/sessions_controller.rb:12:in `create'\n",
            "app/models/policy.rb:88 in load_rules",
        );
        check(
            "<internal:kernel>:187:in 'Kernel#loop'\n\
             \tfrom app/models/policy.rb:88:in 'Policy#load_rules'\n",
            "app/models/policy.rb:88 in Policy#load_rules",
        );
    }

    #[test]
    fn only_library_frames_or_no_frames_give_nothing() {
        assert_eq!(
            first_application_frame("\tat java.base/java.lang.Thread.run(Thread.java:1583)\n"),
            None
        );
        assert_eq!(first_application_frame("no frames here\n"), None);
    }

    #[test]
    fn the_work_is_bounded_in_bytes_and_frames() {
        let library = "  at System.Deep.Call() in /src/lib/Deep.cs:line 1\n";
        let application = "  at Acme.Policies.Load() in /src/Acme/Policies.cs:line 88\n";
        let within = format!("{}{application}", library.repeat(MAX_FRAMES - 1));
        check(&within, "/src/Acme/Policies.cs:88 in Acme.Policies.Load");
        let beyond_frames = format!("{}{application}", library.repeat(MAX_FRAMES));
        assert_eq!(first_application_frame(&beyond_frames), None);
        let padding = format!("{}\n", "x".repeat(MAX_BYTES));
        assert_eq!(
            first_application_frame(&format!("{padding}{application}")),
            None
        );
    }
}
