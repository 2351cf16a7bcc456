//! Logging in: picking a method from the capabilities and the greeting, then USER/PASS, AUTH PLAIN or APOP.

use tokio::io::{AsyncRead, AsyncWrite};

use super::error::{quote, wire};
use super::{AuthMethod, Client, ClientError};
use crate::pop3::{Command, Status, auth};
use crate::secret::Secret;

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Logs in; returns the method that worked. See [`AuthMethod::Auto`] for how it picks.
    pub async fn login(
        &mut self,
        user: &str,
        password: &Secret,
        method: AuthMethod,
    ) -> Result<AuthMethod, ClientError> {
        if [user, password.expose()]
            .iter()
            .any(|s| s.contains(['\r', '\n', '\0']))
        {
            return Err(ClientError::BadCredentials);
        }
        let method = match method {
            AuthMethod::Auto => self.pick_method().await?,
            m => m,
        };
        let result = match method {
            AuthMethod::Plain => self.auth_plain(user, password).await,
            AuthMethod::Apop => self.apop(user, password).await,
            _ => self.user_pass(user, password).await,
        };
        // Capabilities may differ after login (RFC 2449 §5).
        self.conn.forget_capabilities();
        result.map(|()| method)
    }

    async fn pick_method(&mut self) -> Result<AuthMethod, ClientError> {
        let stamp = self.apop_timestamp().is_some();
        Ok(match self.capa().await? {
            None => AuthMethod::User,
            Some(c) if c.has("USER") => AuthMethod::User,
            Some(c)
                if c.sasl_mechanisms()
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case("PLAIN")) =>
            {
                AuthMethod::Plain
            }
            Some(_) if stamp => AuthMethod::Apop,
            // CAPA lists neither: USER is mandatory-to-try in practice (RFC 1939 servers rarely omit it).
            Some(_) => AuthMethod::User,
        })
    }

    fn login_error(e: ClientError, user: &str, method: AuthMethod) -> ClientError {
        match e {
            ClientError::Server { code, text, .. } => ClientError::LoginFailed {
                user: user.to_owned(),
                method: method.name(),
                code,
                text,
            },
            other => other,
        }
    }

    async fn user_pass(&mut self, user: &str, password: &Secret) -> Result<(), ClientError> {
        let m = AuthMethod::User;
        self.command(&Command::User(user.to_owned()))
            .await
            .map_err(|e| Self::login_error(e, user, m))?;
        self.command(&Command::Pass(password.clone()))
            .await
            .map_err(|e| Self::login_error(e, user, m))?;
        Ok(())
    }

    async fn auth_plain(&mut self, user: &str, password: &Secret) -> Result<(), ClientError> {
        let encoded = auth::plain_message(b"", user.as_bytes(), password.expose().as_bytes());
        let mut cmd = Command::Auth {
            mechanism: Some("PLAIN".into()),
            initial: Some(encoded.clone()),
        };
        if !cmd.fits_line_limit() {
            // RFC 5034 §4: an initial response that would push the line past 255 octets is sent after "+ ".
            cmd = Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: None,
            };
        }
        let mut resp = self.exchange(&cmd).await?;
        if resp.status == Status::Continue {
            // Sent without an initial response, or a server that ignores it and asks with an empty challenge.
            let result = async {
                self.conn
                    .send_line(encoded.expose().as_bytes(), "AUTH")
                    .await?;
                self.conn.response("AUTH").await
            }
            .await;
            resp = match result {
                Ok(r) => r,
                Err(e) => {
                    self.broken = true;
                    return Err(wire("AUTH", e));
                }
            };
        }
        match resp.status {
            Status::Ok => Ok(()),
            Status::Err => Err(ClientError::LoginFailed {
                user: user.to_owned(),
                method: AuthMethod::Plain.name(),
                code: resp.code,
                text: quote(resp.text.as_bytes()),
            }),
            Status::Continue => {
                self.broken = true;
                Err(ClientError::Protocol {
                    command: "AUTH",
                    detail: "a second SASL challenge for PLAIN".into(),
                })
            }
        }
    }

    async fn apop(&mut self, user: &str, password: &Secret) -> Result<(), ClientError> {
        let Some(stamp) = self.apop_timestamp() else {
            return Err(ClientError::NoLoginMethod(
                "the greeting has no APOP timestamp; the server does not offer APOP".into(),
            ));
        };
        let digest = auth::apop_digest(stamp, password);
        let cmd = Command::Apop {
            name: user.to_owned(),
            digest,
        };
        self.command(&cmd)
            .await
            .map_err(|e| Self::login_error(e, user, AuthMethod::Apop))?;
        Ok(())
    }
}
