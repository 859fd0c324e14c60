//! `clawbus nats-auth`: the nats-server `accounts` block that gives each
//! host's NATS user exactly the rights its adapter needs, and no more.
//!
//! A host may publish messages only as its own agents (and `http.senders`),
//! write only its own agents' read marks, wake marks and registry records
//! and its own host record, read (direct gets, stream and bucket info),
//! create consumers, pull from them, and receive replies on its own inbox
//! prefix. It may not purge, delete or update the stream or the bucket,
//! delete messages, or publish as anyone else. What it can still do: read
//! every message (a direct get names the stream, not a subject, so reads
//! cannot be narrowed per agent), and publish settlement markers.
//!
//! The provisioning user may do everything in the account; `clawbus setup`
//! runs with it.

use std::fmt::Write as _;

use crate::bus::inbox_prefix;
use crate::config::Config;
use crate::names::AgentName;

/// Why no block could be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AccountsError {
    #[error("{0}: nats.user is not set (each host needs its own NATS user)")]
    NoUser(String),
    #[error("hosts {0} and {1} both use NATS user {2:?}")]
    SharedUser(String, String, String),
    #[error("hosts {0} and {1} name different streams; one account block serves one bus")]
    OtherStream(String, String),
    #[error("no host configs given")]
    NoHosts,
    #[error("cannot hash a password: {0}")]
    Hash(#[from] bcrypt::BcryptError),
}

/// The provisioning user.
pub(crate) struct Admin {
    pub user: String,
    pub password: String,
}

/// How the block is written.
pub(crate) struct Settings {
    /// Write passwords as bcrypt hashes rather than as given.
    pub bcrypt: bool,
    /// The account's file storage limit, as nats-server writes sizes.
    pub max_file: String,
}

/// The `accounts { ... }` block for the hosts of `configs` (each a host's
/// adapter config, as its adapter loads it).
pub(crate) fn accounts(configs: &[Config], admin: &Admin, settings: &Settings) -> Result<String, AccountsError> {
    let first = configs.first().ok_or(AccountsError::NoHosts)?;
    check(configs)?;
    let stream = &first.nats.stream;
    let prefix = first.subject_prefix();
    let bucket = format!("{stream}_STATE");
    let consumers: usize = configs.iter().map(|c| 2 * (c.http.max_streams + 1)).sum::<usize>() + 8;
    let mut out = String::new();
    let w = &mut out;
    writeln!(w, "# clawbus accounts, made by `clawbus nats-auth` for hosts {}.", hosts(configs)).unwrap();
    writeln!(w, "# Include it from every node's config (`include ./accounts.conf`). Hosts set").unwrap();
    writeln!(w, "# nats.least_privilege = true; `clawbus setup` runs as {:?}.", admin.user).unwrap();
    writeln!(w, "# A password written $NAME is read from the server's environment.\n").unwrap();
    writeln!(w, "accounts {{\n  CLAWBUS {{").unwrap();
    writeln!(w, "    jetstream {{").unwrap();
    writeln!(w, "      max_file: {}", settings.max_file).unwrap();
    writeln!(w, "      max_mem: 64MB").unwrap();
    writeln!(w, "      max_streams: 2        # {stream} and KV_{bucket}").unwrap();
    writeln!(w, "      max_consumers: {consumers}   # per host 2 x (http.max_streams + 1), and 8 for tools").unwrap();
    writeln!(w, "    }}\n    users: [").unwrap();
    writeln!(
        w,
        "      {{ user: {:?}, password: {}, permissions: {{ publish: \">\", subscribe: \">\" }} }}",
        admin.user,
        password(&admin.password, settings)?
    )
    .unwrap();
    for config in configs {
        let user = config.nats.user.as_deref().unwrap_or_default();
        let secret = match &config.nats.password {
            Some(given) => password(given.expose(), settings)?,
            None => format!("${}", env_name(&config.host)),
        };
        writeln!(w, "      {{").unwrap();
        writeln!(w, "        # host {}", config.host).unwrap();
        writeln!(w, "        user: {user:?}, password: {secret}").unwrap();
        writeln!(w, "        permissions: {{").unwrap();
        writeln!(w, "          publish: {{ allow: [").unwrap();
        for subject in publish_rights(config, &prefix, stream, &bucket) {
            writeln!(w, "            {subject:?}").unwrap();
        }
        writeln!(w, "          ] }}").unwrap();
        writeln!(w, "          subscribe: {{ allow: [{:?}] }}", format!("{}.>", inbox_prefix(&config.host))).unwrap();
        writeln!(w, "        }}\n      }}").unwrap();
    }
    writeln!(w, "    ]\n  }}\n}}").unwrap();
    Ok(out)
}

/// What `config`'s host may publish to.
fn publish_rights(config: &Config, prefix: &str, stream: &str, bucket: &str) -> Vec<String> {
    let agents: Vec<&AgentName> = config.agents.iter().map(|agent| &agent.name).collect();
    let senders = agents.iter().copied().chain(&config.http.senders);
    let mut rights = Vec::new();
    for name in senders {
        rights.push(format!("{prefix}.msg.*.{name}"));
        rights.push(format!("{prefix}.all.{name}"));
    }
    rights.push(format!("{prefix}.void"));
    for name in &agents {
        for record in ["agent", "read"] {
            rights.push(format!("$KV.{bucket}.{record}.{name}"));
        }
    }
    rights.push(format!("$KV.{bucket}.host.{}", config.host));
    // The wake marks and counts of all the host's agents.
    rights.push(format!("$KV.{bucket}.wakes.{}", config.host));
    for record in ["members", "stats"] {
        rights.push(format!("$KV.{bucket}.{record}.{}.>", config.host));
    }
    // Stopped threads are recorded by whichever adapter refuses the reply.
    rights.push(format!("$KV.{bucket}.thread.>"));
    rights.push("$JS.API.INFO".into());
    for target in [stream.to_owned(), format!("KV_{bucket}")] {
        rights.push(format!("$JS.API.STREAM.INFO.{target}"));
        rights.push(format!("$JS.API.STREAM.MSG.GET.{target}"));
        rights.push(format!("$JS.API.DIRECT.GET.{target}"));
        rights.push(format!("$JS.API.DIRECT.GET.{target}.>"));
    }
    rights.push(format!("$JS.API.CONSUMER.CREATE.{stream}"));
    rights.push(format!("$JS.API.CONSUMER.CREATE.{stream}.>"));
    rights.push(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"));
    rights.push(format!("$JS.API.CONSUMER.INFO.{stream}.>"));
    rights
}

fn check(configs: &[Config]) -> Result<(), AccountsError> {
    for (i, config) in configs.iter().enumerate() {
        let user = config.nats.user.as_deref().ok_or_else(|| AccountsError::NoUser(config.host.clone()))?;
        for other in &configs[..i] {
            if other.nats.user.as_deref() == Some(user) {
                return Err(AccountsError::SharedUser(other.host.clone(), config.host.clone(), user.into()));
            }
            if other.nats.stream != config.nats.stream {
                return Err(AccountsError::OtherStream(other.host.clone(), config.host.clone()));
            }
        }
    }
    Ok(())
}

/// A password as the server config says it: `$NAME` stays a reference to
/// the server's environment; anything else is quoted, or hashed.
fn password(given: &str, settings: &Settings) -> Result<String, AccountsError> {
    let reference = given
        .strip_prefix('$')
        .is_some_and(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    if reference {
        return Ok(given.to_owned());
    }
    let written = if settings.bcrypt { bcrypt::hash(given, bcrypt::DEFAULT_COST)? } else { given.to_owned() };
    Ok(format!("{written:?}"))
}

/// The environment variable the server reads a host's password from when
/// its config has none (it comes from the adapter's secrets file instead).
fn env_name(host: &str) -> String {
    format!("CLAWBUS_PASSWORD_{}", host.to_ascii_uppercase().replace('-', "_"))
}

fn hosts(configs: &[Config]) -> String {
    configs.iter().map(|c| c.host.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, user: Option<&str>) -> Config {
        let user = user.map(|u| format!("user = \"{u}\"\npassword = \"pw\"\n")).unwrap_or_default();
        Config::from_toml(&format!(
            "host = \"{name}\"\n[http]\nsenders = [\"ci\"]\n[nats]\n{user}[wake]\nmode = \"none\"\n\
             [[agents]]\nname = \"{name}-agent\"\n"
        ))
        .unwrap()
    }

    fn settings() -> Settings {
        Settings { bcrypt: false, max_file: "1GB".into() }
    }

    #[test]
    fn each_host_may_publish_only_as_its_own_agents_and_senders() {
        let admin = Admin { user: "admin".into(), password: "$ADMIN_PW".into() };
        let block = accounts(&[host("a", Some("ua")), host("b", Some("ub"))], &admin, &settings()).unwrap();
        assert!(block.contains("password: $ADMIN_PW,"), "an environment reference stays unquoted");
        let a = &block[block.find("# host a").unwrap()..block.find("# host b").unwrap()];
        for right in [
            "\"clawbus.msg.*.a-agent\"",
            "\"clawbus.msg.*.ci\"",
            "\"$KV.CLAWBUS_STATE.read.a-agent\"",
            "\"$KV.CLAWBUS_STATE.host.a\"",
            "\"_INBOX_a.>\"",
        ] {
            assert!(a.contains(right), "{right} missing:\n{a}");
        }
        for wrong in ["b-agent", "PURGE", "DELETE", "UPDATE", "STREAM.CREATE", "\"clawbus.>\"", "\">\""] {
            assert!(!a.contains(wrong), "{wrong} granted to host a:\n{a}");
        }
    }

    #[test]
    fn hosts_need_users_of_their_own() {
        let admin = Admin { user: "admin".into(), password: "pw".into() };
        assert!(matches!(accounts(&[host("a", None)], &admin, &settings()), Err(AccountsError::NoUser(_))));
        let shared = [host("a", Some("same")), host("b", Some("same"))];
        assert!(matches!(accounts(&shared, &admin, &settings()), Err(AccountsError::SharedUser(..))));
        let hashed = accounts(&[host("a", Some("u"))], &admin, &Settings { bcrypt: true, ..settings() }).unwrap();
        assert!(hashed.contains("\"$2b$") && !hashed.contains("\"pw\""), "{hashed}");
    }
}
