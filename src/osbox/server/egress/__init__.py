"""The egress engine: policy, policy DNS resolver and nftables enforcement for one sandbox network.

Not wired into sandboxes yet (see the README's "Networking and egress"). Modules:

* `policy`: the policy model and the `/policy` edits, pure.
* `resolver`: an asyncio DNS server answering NXDOMAIN for denied names and reporting allowed answers.
* `nft`: the nftables ruleset of one sandbox network namespace, rendered (pure).
* `enforcer`: applies that ruleset inside a network namespace and keeps its allow sets filled.
"""

from .policy import MAX_RULES, Action, Policy, PolicyError, Rule

__all__ = ["MAX_RULES", "Action", "Policy", "PolicyError", "Rule"]
