"""The egress engine: policy, policy DNS resolver and nftables enforcement for one sandbox network.

Wired into sandboxes by `networks` (see the README's "Networking and egress"). Modules:

* `policy`: the policy model and the `/policy` edits, pure.
* `resolver`: an asyncio DNS server answering NXDOMAIN for denied names and reporting allowed answers.
* `nft`: the nftables ruleset of one sandbox network namespace, rendered (pure).
* `nft_runner`: runs nft scripts inside a namespace (libnftables in a thread there, or `nft` itself).
* `enforcer`: applies the ruleset, keeps its allow sets filled; probes the enforcement mode.
* `nflog`: refused connections read from NFLOG; `denials`: which denials become events.
* `engine`: `SandboxEgress`, all of the above for one sandbox; `app`: the `/policy` HTTP app over it.
* `netns`: sockets created (and work done) inside another network namespace.
* `hostnet`: `HostNetwork`, the host side of every sandbox's network (veths, a /30 pool, NAT, isolation);
  `host_nft`: its nftables table, rendered; `sandbox_network`: `connect_sandbox`, one sandbox in mode
  none, open or filtered.
* `networks`: `SandboxNetworks`, every sandbox network of a server (which mode, kept across restarts);
  `vault`: the Credential Vault of the egress app.
"""

from .policy import MAX_RULES, Action, Policy, PolicyError, Rule

__all__ = ["MAX_RULES", "Action", "Policy", "PolicyError", "Rule"]
