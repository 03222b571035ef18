//! protox's errors as `io::Error`s a build log can point at: `path:line:column:
//! message`, with the help text when there is one.

use std::io;
use std::path::PathBuf;

use miette::Diagnostic;

/// Converts a protox error. `includes` find the file on disk from the name protox
/// knows it by, so that the message names a path the reader can open.
pub(crate) fn to_io_error(err: &protox::Error, includes: &[PathBuf]) -> io::Error {
    let kind = if err.is_file_not_found() {
        io::ErrorKind::NotFound
    } else if err.is_io() {
        io::ErrorKind::Other
    } else {
        io::ErrorKind::InvalidData
    };
    let mut message = match (err.file(), location(err)) {
        (Some(name), Some((line, column))) => {
            format!("{}:{line}:{column}: {err}", shown_path(name, includes))
        }
        (Some(name), None) => format!("{}: {err}", shown_path(name, includes)),
        (None, _) => err.to_string(),
    };
    if let Some(label) = first_label(err).and_then(|l| l.label().map(str::to_owned)) {
        message.push_str(&format!(" ({label})"));
    }
    if let Some(help) = err.help() {
        message.push_str(&format!("\n  help: {help}"));
    }
    io::Error::new(kind, message)
}

fn first_label(err: &protox::Error) -> Option<miette::LabeledSpan> {
    err.labels()?.next()
}

/// The 1-based line and column where the error's first label starts, counted in
/// the source text protox read (columns in characters).
fn location(err: &protox::Error) -> Option<(usize, usize)> {
    let label = first_label(err)?;
    let source = err.source_code()?;
    // The whole text before the span: as many context lines as there are.
    let before = miette::SourceSpan::from((0, label.offset()));
    let contents = source.read_span(&before, usize::MAX, 0).ok()?;
    let text = String::from_utf8_lossy(contents.data());
    let prefix = text.get(..label.offset().min(text.len()))?;
    let line = prefix.matches('\n').count() + 1;
    let column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line, column))
}

/// The file as the reader can find it: under the first include directory that
/// has it, else the name protox knows it by.
fn shown_path(name: &str, includes: &[PathBuf]) -> String {
    includes
        .iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .map_or_else(|| name.to_owned(), |p| p.display().to_string())
}
