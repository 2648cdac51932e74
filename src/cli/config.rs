//! Where `tqx serve`'s settings come from: flags, `TQX_*` environment
//! variables and a TOML file (`--config FILE`), in that order of precedence,
//! then the built-in defaults (docs/configuration.md).
//!
//! One definition of every setting: the flags of [`super::serve::ServeArgs`].
//! Each flag also reads the environment variable named after it
//! (`--max-connections` ↔ `TQX_MAX_CONNECTIONS`, by clap), and the file's keys
//! are the same names (`max_connections` or `max-connections`). The file is
//! applied after clap has parsed flags and environment: a key whose setting
//! came from neither is handed to clap as that flag, so its value goes through
//! the flag's own parser and range check, and precedence needs no code of its
//! own. Test hooks (hidden flags) have no variable and no key.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// Flags that are actions, not settings: no variable, no key, not printed.
const NOT_SETTINGS: [&str; 3] = ["print_config", "help", "version"];

/// Where a setting's value came from (`tqx serve --print-config`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Source {
    Flag,
    Environment(String),
    File(PathBuf),
    Default,
}

/// The variable a setting reads: `TQX_` and its flag's name in capitals.
fn variable(long: &str) -> String {
    format!("TQX_{}", long.replace('-', "_").to_uppercase())
}

fn is_setting(arg: &clap::Arg) -> bool {
    !arg.is_hide_set() && arg.get_long().is_some() && !NOT_SETTINGS.contains(&arg.get_id().as_str())
}

/// `command` with a `TQX_*` variable on every setting of `tqx serve`: the
/// root's flags (the server runs without a subcommand too) and `serve`'s.
pub(super) fn with_environment(command: Command) -> Command {
    let add = |arg: clap::Arg| match arg.get_long() {
        Some(long) if is_setting(&arg) => {
            let name = variable(long);
            arg.env(name)
        }
        _ => arg,
    };
    command.mut_args(add).mut_subcommand("serve", |serve| serve.mut_args(add))
}

/// The settings read from the file, and the flags they became.
pub(super) struct FileSettings {
    path: PathBuf,
    /// Setting ids taken from the file (the rest came from elsewhere).
    taken: Vec<String>,
}

/// Applies `--config FILE` (or `TQX_CONFIG`) under the flags and the
/// environment: returns the matches parsed again with the file's settings,
/// or `matches` as they are without a file. `serve` is the `serve`-level
/// matches within `matches`; `argv` the command line as given.
pub(super) fn apply_file(
    command: &Command,
    argv: &[OsString],
    matches: ArgMatches,
    serve: &ArgMatches,
    serve_command: &Command,
) -> Result<(ArgMatches, Option<FileSettings>), String> {
    let Some(path) = serve.get_one::<PathBuf>("config").cloned() else { return Ok((matches, None)) };
    let text = std::fs::read_to_string(&path)
        .map_err(|error| format!("cannot read the configuration file {}: {error}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|error| format!("the configuration file {} is not valid TOML: {error}", path.display()))?;
    let settings: BTreeMap<&str, &clap::Arg> =
        serve_command.get_arguments().filter(|arg| is_setting(arg)).map(|arg| (arg.get_id().as_str(), arg)).collect();
    let mut extra: Vec<OsString> = Vec::new();
    let mut taken = Vec::new();
    for (key, value) in &table {
        let id = key.replace('-', "_");
        let Some(arg) = settings.get(id.as_str()).filter(|_| id != "config") else {
            return Err(format!(
                "the configuration file {} has an unknown key `{key}` (keys are the flags of `tqx serve --help` \
                 without their dashes, e.g. max_connections)",
                path.display()
            ));
        };
        // Flags and the environment come first.
        if !matches!(serve.value_source(&id), None | Some(ValueSource::DefaultValue)) {
            continue;
        }
        let long = arg.get_long().unwrap_or(key);
        let flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        match value {
            toml::Value::Boolean(on) if flag => {
                if *on {
                    extra.push(format!("--{long}").into());
                }
            }
            toml::Value::String(text) if !flag => extra.push(format!("--{long}={text}").into()),
            toml::Value::Integer(number) if !flag => extra.push(format!("--{long}={number}").into()),
            toml::Value::Float(number) if !flag => extra.push(format!("--{long}={number}").into()),
            _ => {
                let expected = if flag { "true or false" } else { "a string or a number" };
                return Err(format!(
                    "the configuration file {}: `{key}` must be {expected}, not {}",
                    path.display(),
                    value.type_str()
                ));
            }
        }
        taken.push(id);
    }
    if extra.is_empty() {
        return Ok((matches, Some(FileSettings { path, taken })));
    }
    let argv: Vec<OsString> = argv.iter().cloned().chain(extra).collect();
    let matches = command.clone().try_get_matches_from(argv).map_err(|error| {
        let error = error.render().to_string();
        // clap's own message, without its "error: " and its pointer to --help.
        let error = error.trim().trim_start_matches("error: ").lines().next().unwrap_or_default().to_owned();
        format!("the configuration file {} has a value `tqx serve` refuses: {error}", path.display())
    })?;
    Ok((matches, Some(FileSettings { path, taken })))
}

/// The effective configuration as TOML a `--config` file could hold, each
/// setting followed by where its value came from (`--print-config`).
pub(super) fn render(serve_command: &Command, serve: &ArgMatches, file: Option<&FileSettings>) -> String {
    let mut out = String::from("# tqx serve: the effective configuration (flag > environment > file > default)\n");
    if let Some(file) = file {
        out.push_str(&format!("# configuration file: {}\n", file.path.display()));
    }
    // `config` is where the file came from, not a setting a file can hold:
    // without it the output is itself a valid file.
    for arg in serve_command.get_arguments().filter(|arg| is_setting(arg) && arg.get_id() != "config") {
        let id = arg.get_id().as_str();
        let long = arg.get_long().unwrap_or(id);
        let source = match serve.value_source(id) {
            Some(ValueSource::CommandLine) if file.is_some_and(|file| file.taken.iter().any(|taken| taken == id)) => {
                Source::File(file.map(|file| file.path.clone()).unwrap_or_default())
            }
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Environment(variable(long)),
            _ => Source::Default,
        };
        let flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let value = if flag {
            Some(serve.get_flag(id).to_string())
        } else {
            serve.get_raw(id).and_then(|mut values| values.next()).map(|raw| toml_value(&raw.to_string_lossy()))
        };
        let key = id;
        let line = match value {
            Some(value) => format!("{key} = {value}"),
            None => format!("# {key} = (not set)"),
        };
        let from = match source {
            Source::Flag => format!("flag --{long}"),
            Source::Environment(name) => format!("environment {name}"),
            Source::File(path) => format!("file {}", path.display()),
            Source::Default => "default".to_string(),
        };
        out.push_str(&format!("{line:<48} # {from}\n"));
    }
    out
}

/// A raw flag value as TOML: a number stays a number, anything else is a
/// quoted string.
fn toml_value(raw: &str) -> String {
    if raw.parse::<i64>().is_ok() {
        raw.to_string()
    } else {
        toml::Value::String(raw.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_reads_the_variable_named_after_it() {
        assert_eq!(variable("max-connections"), "TQX_MAX_CONNECTIONS");
        assert_eq!(variable("http"), "TQX_HTTP");
    }

    #[test]
    fn numbers_stay_numbers_and_the_rest_is_quoted() {
        assert_eq!(toml_value("16384"), "16384");
        assert_eq!(toml_value("127.0.0.1:7700"), "\"127.0.0.1:7700\"");
        assert_eq!(toml_value("interval:5"), "\"interval:5\"");
    }
}
