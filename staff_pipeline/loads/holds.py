"""Per-action thresholds: a load that would change too much of a target waits for a person.

Bad source data is the main way roster syncs hurt schools, and it shows as a night that creates,
updates, deactivates or deletes far more than nights do (a re-keyed export recreates everyone, a
broken one deletes everyone, a mangled column rewrites everyone). Each action has a limit, a share of
what the target holds for the LEA or district and, where set, a count. One action over its limit holds
the whole load of that LEA or district, not only that action: a source that is wrong in one way is
not to be trusted for the rest of the night either. A person lifts the hold by confirming that action
in the run config.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

ACTIONS = ("create", "update", "deactivate", "delete")


@dataclass(frozen=True)
class Limit:
    """``share``: of what the target holds (none yet, on a first load: then only ``count`` applies);
    ``count``: requests of the action, when set."""

    share: float = 1.0
    count: int | None = None


def confirm_flag(action: str) -> str:
    """The run-config flag that lifts ``action``'s hold (``confirm_creates``, ``confirm_deactivations``)."""
    return "confirm_deactivations" if action == "deactivate" else f"confirm_{action}s"


def confirmed_actions(config: object) -> set[str]:
    """The actions a run config (Dagster ``Config``) confirms through its ``confirm_*`` flags."""
    return {action for action in ACTIONS if getattr(config, confirm_flag(action), False)}


def over_limits(
    planned: Mapping[str, int],
    held_now: int,
    limits: Mapping[str, Limit],
    confirmed: Collection[str],
    noun: str,
) -> list[str]:
    """The planned actions above their limit and not confirmed, one sentence each naming the flag.

    ``held_now``: what the target holds now, in ``noun`` (an LEA's records, a district's active
    accounts), the base of every share.
    """
    out = []
    for action, limit in limits.items():
        n = planned.get(action, 0)
        if not n or action in confirmed:
            continue
        over = []
        if held_now and n > limit.share * held_now:
            over.append(f"max_{action}_share {limit.share:.0%}")
        if limit.count is not None and n > limit.count:
            over.append(f"max_{action}_count {limit.count:,}")
        if over:
            share = f" ({n / held_now:.0%})" if held_now else ""
            out.append(
                f"would {action} {n:,} of {held_now:,} {noun}{share}, above {' and '.join(over)} "
                f"({confirm_flag(action)}: true)"
            )
    return out


def held_message(holds: list[str]) -> str:
    """The report's ``held`` text for a load that sent nothing because of ``holds``."""
    return (
        f"held: the plan {'; and '.join(holds)}; nothing sent. Check the source, then run again with "
        "the confirmation named"
    )
