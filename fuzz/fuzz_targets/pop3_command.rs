//! Fuzz target: the client command parser (`Command::parse`, `SaslResponse::parse`) and the command encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popguard::pop3::{COMMAND_LINE_READ_LIMIT, Command, CommandError, SaslResponse};
use popguard::secret::Secret;

fuzz_target!(|data: &[u8]| {
    let parsed = Command::parse(data);
    if data.len() > COMMAND_LINE_READ_LIMIT {
        assert!(matches!(parsed, Err(CommandError::TooLong { .. })));
    }
    match &parsed {
        Ok(cmd) => check_command(cmd),
        // Error messages follow `-ERR ` on the wire: one short line.
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains(['\r', '\n', '\0']), "{msg:?}");
            assert!(msg.len() < 200, "{msg:?}");
        }
    }
    if let Ok(SaslResponse::Data(d)) = SaslResponse::parse(data) {
        assert!(
            d.expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        );
    }
});

fn check_command(cmd: &Command) {
    let wire = cmd.to_wire();
    assert!(wire.ends_with(b"\r\n"));
    let line = &wire[..wire.len() - 2];
    assert!(
        !line.contains(&b'\n') && !line.contains(&b'\r') && !line.contains(&0),
        "{wire:?}"
    );
    // What we send re-parses to the same command (the proxy relays parsed commands upstream). An unknown verb
    // re-parses too, so it can never turn into a known verb by being logged or re-encoded.
    assert_eq!(
        Command::parse(line).as_ref(),
        Ok(cmd),
        "re-parse of {line:?}"
    );
    // Secrets never reach Debug or Display: what is shown does not depend on the secret's value.
    let other = Secret::new("a-different-secret");
    let swapped = match cmd {
        Command::Pass(_) => Some(Command::Pass(other)),
        Command::Apop { name, .. } => Some(Command::Apop {
            name: name.clone(),
            digest: other,
        }),
        Command::Auth {
            mechanism,
            initial: Some(_),
        } => Some(Command::Auth {
            mechanism: mechanism.clone(),
            initial: Some(other),
        }),
        _ => None,
    };
    if let Some(swapped) = swapped {
        assert_eq!(format!("{cmd} {cmd:?}"), format!("{swapped} {swapped:?}"));
    }
    let _ = cmd.verb();
    let _ = cmd.expects_multiline();
    let _ = cmd.fits_line_limit();
}
