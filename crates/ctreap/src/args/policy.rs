//! The deletion policy's flags, shared by `ctreap run` (what it deletes) and `ctreap stale`
//! (what it says the agent would delete), so that the two cannot be told different things.

use clap::Args;

use crate::cluster::Proto;
use crate::reconcile::{Policy, ProtoSet};

#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Protocols whose stale flows are deleted.
    #[arg(long, value_delimiter = ',', value_parser = parse_proto, default_value = "udp,tcp,sctp")]
    pub protocols: Vec<Proto>,
    /// Also delete TCP and SCTP flows to backends that are listed with serving=false (not
    /// ready). UDP ones are always deleted, as kube-proxy's own cleanup does; a TCP connection
    /// to a pod that is merely not ready may still be working.
    #[arg(long)]
    pub delete_not_serving: bool,
}

fn parse_proto(s: &str) -> Result<Proto, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "udp" => Ok(Proto::Udp),
        "tcp" => Ok(Proto::Tcp),
        "sctp" => Ok(Proto::Sctp),
        other => Err(format!("{other:?} is not a protocol (udp, tcp, sctp)")),
    }
}

impl PolicyArgs {
    pub fn protocol_set(&self) -> ProtoSet {
        self.protocols
            .iter()
            .fold(ProtoSet::NONE, |set, p| set.with(*p))
    }

    /// The deletion policy these flags ask for: [`Policy::default`] (gone: every protocol; not
    /// serving: UDP) within --protocols, not serving for every protocol with
    /// --delete-not-serving. Draining backends are never deleted.
    pub fn policy(&self) -> Policy {
        let protocols = self.protocol_set();
        let default = Policy::default();
        Policy {
            gone: default.gone.intersect(protocols),
            not_serving: if self.delete_not_serving {
                protocols
            } else {
                default.not_serving.intersect(protocols)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        policy: PolicyArgs,
    }

    fn policy(args: &[&str]) -> Policy {
        Cli::try_parse_from(std::iter::once("ctreap").chain(args.iter().copied()))
            .expect("flags")
            .policy
            .policy()
    }

    /// UDP flows to not-serving backends go by default, as kube-proxy's reconciler deletes
    /// them; TCP and SCTP ones only with --delete-not-serving; --protocols bounds both.
    #[test]
    fn not_serving_udp_is_deleted_by_default() {
        let p = policy(&[]);
        assert_eq!((p.gone, p.not_serving), (ProtoSet::ALL, ProtoSet::UDP));
        assert_eq!(p, Policy::default());
        let p = policy(&["--delete-not-serving"]);
        assert_eq!(p.not_serving, ProtoSet::ALL);
        let p = policy(&["--protocols", "tcp"]);
        assert_eq!((p.gone, p.not_serving), (ProtoSet::TCP, ProtoSet::NONE));
    }

    #[test]
    fn protocols() {
        assert_eq!(parse_proto("UDP"), Ok(Proto::Udp));
        assert!(parse_proto("icmp").is_err());
    }
}
