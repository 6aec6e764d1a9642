//! `weft notify add|list|remove|test` (who `weft serve` tells when a run stops, fails or
//! queues errors) and `weft webhook set-key|remove-key` (the Xero webhook signing key). Both
//! are secrets, sealed in the workspace's credential store like client secrets.

use std::io::{IsTerminal as _, Read as _};
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use weft_engine::secrets::SecretStore;
use weft_server::notify::{self, Notifier, Receiver, RunEvent};

use crate::cmd_client::start_dir;
use crate::{Io, connect};

#[derive(Debug, Subcommand)]
pub(crate) enum NotifyCmd {
    /// Add (or replace) a receiver: a Slack-compatible webhook (--webhook; its URL asked for
    /// hidden, or read from standard input with --stdin) or e-mail (--email-to ADDRESS
    /// --from ADDRESS; the SMTP server's URL with its password asked for hidden, or --stdin).
    Add(AddArgs),
    /// List the receivers (never their URLs).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a receiver.
    Remove {
        /// Its name.
        name: String,
    },
    /// Send a test message to every receiver (or one) and say which could not be told.
    Test {
        /// Only this receiver.
        name: Option<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// A name for the receiver (letters, digits, `-` and `_`).
    name: String,
    /// A Slack-compatible incoming webhook (`{"text": …}` is posted to it).
    #[arg(long, conflicts_with_all = ["email_to", "from"])]
    webhook: bool,
    /// E-mail to this address (repeat for several).
    #[arg(long = "email-to", value_name = "ADDRESS", requires = "from")]
    email_to: Vec<String>,
    /// The sender's address of the e-mails.
    #[arg(long, value_name = "ADDRESS")]
    from: Option<String>,
    /// Read the URL (the webhook's, or the SMTP server's such as
    /// smtps://USER:PASSWORD@HOST:465) from standard input instead of asking.
    #[arg(long)]
    stdin: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum WebhookCmd {
    /// Store the signing key of a provider's webhooks (asked for hidden, or --stdin); `weft
    /// serve` then receives them at /webhooks/PROVIDER and runs the streams they concern.
    SetKey {
        /// The provider (xero).
        #[arg(value_parser = ["xero"])]
        provider: String,
        /// Read the key from standard input.
        #[arg(long)]
        stdin: bool,
    },
    /// Remove the signing key: `weft serve` no longer receives that provider's webhooks.
    RemoveKey {
        /// The provider (xero).
        #[arg(value_parser = ["xero"])]
        provider: String,
    },
}

fn store(workspace: Option<&Path>) -> Result<SecretStore> {
    let ws = weft_engine::workspace::Workspace::find(&start_dir(workspace)?)?;
    Ok(ws.secrets()?)
}

/// A secret line from standard input, or asked for hidden on the terminal.
fn read_hidden(what: &str, from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read the {what} from standard input"))?;
        return Ok(text.trim().to_owned());
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the {what}: pass --stdin and write it to standard input");
    }
    Ok(rpassword::prompt_password(format!("{what} (hidden): "))
        .with_context(|| format!("cannot read the {what}"))?
        .trim()
        .to_owned())
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!(
            "receiver name `{name}`: use 1 to 64 letters, digits, `-` or `_` (for example ops-slack)"
        );
    }
    Ok(())
}

pub(crate) fn notify(cmd: NotifyCmd, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    match cmd {
        NotifyCmd::Add(args) => {
            check_name(&args.name)?;
            let receiver = if args.webhook {
                Receiver::Webhook {
                    url: read_hidden("webhook URL", args.stdin)?,
                }
            } else if let Some(from) = args.from {
                Receiver::Email {
                    smtp: read_hidden("SMTP server URL", args.stdin)?,
                    from,
                    to: args.email_to,
                }
            } else {
                bail!(
                    "say what {} is: --webhook, or --email-to ADDRESS --from ADDRESS",
                    args.name
                );
            };
            let mut store = store(workspace)?;
            notify::store_receiver(&mut store, &args.name, &receiver)
                .with_context(|| format!("receiver {} was not added", args.name))?;
            writeln!(
                io.out,
                "added {}: {} (try it with `weft notify test {}`)",
                args.name,
                receiver.describe(),
                args.name
            )?;
        }
        NotifyCmd::List { json } => {
            let receivers = notify::receivers(&store(workspace)?)?;
            if json {
                let list: Vec<_> = receivers
                    .iter()
                    .map(|(n, r)| serde_json::json!({ "name": n, "receiver": r.describe() }))
                    .collect();
                serde_json::to_writer_pretty(&mut *io.out, &list)?;
                writeln!(io.out)?;
            } else if receivers.is_empty() {
                writeln!(
                    io.out,
                    "no receivers; add one with `weft notify add ops --webhook`"
                )?;
            } else {
                for (name, r) in &receivers {
                    writeln!(io.out, "{name}\t{}", r.describe())?;
                }
            }
        }
        NotifyCmd::Remove { name } => {
            let mut store = store(workspace)?;
            if !store.remove(&format!("{}{name}", notify::RECEIVER_PREFIX))? {
                bail!("there is no receiver `{name}`; `weft notify list` shows them");
            }
            writeln!(io.out, "removed {name}")?;
        }
        NotifyCmd::Test { name } => {
            let mut receivers = notify::receivers(&store(workspace)?)?;
            if let Some(name) = &name {
                receivers.retain(|(n, _)| n == name);
                if receivers.is_empty() {
                    bail!("there is no receiver `{name}`; `weft notify list` shows them");
                }
            }
            if receivers.is_empty() {
                bail!("no receivers to test; add one with `weft notify add ops --webhook`");
            }
            let notifier = Notifier::from_receivers(&receivers)?;
            let event = RunEvent::Stopped {
                flow: "(test)".into(),
                reason: "this is a test message from `weft notify test`".into(),
            };
            let failures = connect::runtime()?.block_on(notifier.notify(&event));
            for f in &failures {
                writeln!(io.err, "not delivered: {f}")?;
            }
            writeln!(
                io.out,
                "told {} of {} receiver(s)",
                notifier.len() - failures.len(),
                notifier.len()
            )?;
            if !failures.is_empty() {
                return Ok(1);
            }
        }
    }
    Ok(0)
}

pub(crate) fn webhook(cmd: WebhookCmd, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    let mut store = store(workspace)?;
    match cmd {
        WebhookCmd::SetKey { provider, stdin } => {
            let key = read_hidden("webhook signing key", stdin)?;
            weft_server::webhooks::store_xero_key(&mut store, &key)?;
            writeln!(
                io.out,
                "stored the {provider} webhook key; `weft serve` receives {provider} webhooks at /webhooks/{provider} from its next start"
            )?;
        }
        WebhookCmd::RemoveKey { provider } => {
            if !store.remove(weft_server::webhooks::XERO_KEY_ID)? {
                bail!("no {provider} webhook key was stored");
            }
            writeln!(io.out, "removed the {provider} webhook key")?;
        }
    }
    Ok(0)
}
