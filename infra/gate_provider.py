"""The shape every stack's champion gate shares: a dynamic provider whose state is the champion.

A gate sits between a training job and what serves its model. Each `pulumi up` that brings a new
challenger (a new training run) updates the gate in place; the gate reads the challenger's held-out
accuracy, applies the rule (infra/gate.py) against the champion recorded in its own state, and, when
it promotes, copies the challenger's artifact to a location the gate owns. What serves the model reads
only the gate's champion outputs, so when the challenger loses they do not change and Pulumi changes
nothing downstream (no model, configuration, deployment or process is replaced).

A stack adopts the gate by subclassing `ChampionGateProvider` with four cloud-specific steps:

- `evaluate(props)`: the challenger as a `Candidate` (its accuracy, None with a reason when unreadable);
- `keep(props, candidate)`: copy its artifact to the gate's champion location, return that location;
- `discard(props, artifact)`: remove a champion copy (already gone is success);
- `kept(props, artifact)`: whether a champion copy is still there;

plus `location_keys` (the inputs that say where copies live: changing them replaces the gate). The
resource's inputs are `gate_inputs(...)` plus those keys; its outputs are `champion`, `challenger`,
`champion_artifact` and `retired` (see docs/gate.md).

The previous champion's copy is kept for one more promotion (`retired`): while an update rolls the
serving side forward, what is still serving the old champion may need its artifact (a SageMaker
endpoint scaling out, a rollback), so it is removed only when the next champion is crowned, and by
`pulumi destroy`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from infra.dynamic import changed_keys, log, state_of, warn
from infra.gate import TIE_EPSILON, Decision, PromotionRule, Verdict, decide, readable_accuracy
from infra.hashing import content_hash

# The inputs whose change means a new round of the rule (a new challenger, or a new rule).
DECISION_KEYS = (
    "challenger_id",
    "challenger_artifact",
    "min_accuracy",
    "promotion_tolerance",
    "force_promotion",
)
OUTPUT_KEYS = ("champion", "challenger", "champion_artifact", "retired")


class GateError(Exception):
    """The gate refuses to let the update go on; the message says why and what to do."""


@dataclass(frozen=True)
class Candidate:
    """A trained model as the gate sees it: where it is, how good it is, when it was trained."""

    source: str
    """The training run that made it (a local job id, a SageMaker training job name, ...)."""
    artifact: str
    """Where its artifact is (the challenger's own location, or the champion copy's)."""
    accuracy: float | None
    """Held-out accuracy in [0, 1]; None when it could not be read."""
    trained: str | None = None
    """When training finished (ISO 8601, UTC), when known."""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    """What the training run reported beside the accuracy."""
    unreadable_because: str = "no accuracy was reported"
    """Why `accuracy` is None (ignored otherwise)."""

    def record(self, **extra: Any) -> dict[str, Any]:
        """As stored in the gate's state and exported in the `models` output."""
        record = asdict(self)
        record.pop("unreadable_because")
        record["metrics"] = dict(self.metrics)
        return {**record, **extra}


def scored(
    source: str,
    artifact: str,
    text: str,
    where: str,
    trained: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Candidate:
    """A challenger from the text of the metrics.json its training wrote (`where` names that file in the
    reasons): scored with its `accuracy` when that is a number in [0, 1]; unreadable, and why, otherwise.
    `extra` goes into its metrics beside the file's."""
    try:
        metrics = json.loads(text)
    except ValueError as error:
        return Candidate(source, artifact, None, trained, unreadable_because=f"{where} is not JSON ({error})")
    if not isinstance(metrics, dict):
        return Candidate(source, artifact, None, trained, unreadable_because=f"{where} is not a JSON object")
    accuracy = readable_accuracy(metrics.get("accuracy"))
    why = f"{where} has no accuracy in [0, 1] (accuracy: {metrics.get('accuracy')!r})"
    return Candidate(
        source, artifact, accuracy, trained, {**(extra or {}), **metrics}, unreadable_because=why
    )


def gate_inputs(
    model: pulumi.Input[str],
    challenger_id: pulumi.Input[str],
    challenger_artifact: pulumi.Input[str],
    rule: PromotionRule,
) -> dict[str, Any]:
    """The inputs every gate resource declares (plus its stack's `location_keys`), outputs as None."""
    return {
        "model": model,
        "challenger_id": challenger_id,
        "challenger_artifact": challenger_artifact,
        "min_accuracy": rule.min_accuracy,
        "promotion_tolerance": rule.tolerance,
        "force_promotion": rule.force,
        **dict.fromkeys(OUTPUT_KEYS),
    }


def rule_of(props: Mapping[str, Any]) -> PromotionRule:
    return PromotionRule(
        min_accuracy=float(props["min_accuracy"]),
        tolerance=float(props.get("promotion_tolerance") or 0.0),
        force=bool(props.get("force_promotion")),
    )


class ChampionGateProvider(ResourceProvider):
    """Create and update run one round of the rule; the state is the champion; delete removes the copies."""

    serialize_as_secret_always = False
    location_keys: ClassVar[tuple[str, ...]] = ()
    # False where something downstream removes old copies once the endpoint verifiably serves the new one
    # (the aws stack's EndpointUpdateCheck): a rolled-back update leaves the endpoint on the retired copy.
    discards_retired_on_promotion: ClassVar[bool] = True

    # -- what each stack provides -------------------------------------------------------------

    def evaluate(self, props: Mapping[str, Any]) -> Candidate:
        raise NotImplementedError

    def keep(self, props: Mapping[str, Any], candidate: Candidate) -> str:
        raise NotImplementedError

    def discard(self, props: Mapping[str, Any], artifact: str) -> None:
        raise NotImplementedError

    def kept(self, props: Mapping[str, Any], artifact: str) -> bool:
        raise NotImplementedError

    # -- the engine's calls ---------------------------------------------------------------------

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._round(props, champion=None, retired=None)
        return CreateResult(
            id_=f"{props['model']}-gate-{secrets.token_hex(4)}", outs={**state_of(props), **outs}
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        champion = olds.get("champion") or None
        if champion and not self.kept(news, str(champion["artifact"])):
            champion = self._restored(news, champion)
        outs = self._round(news, champion=champion, retired=olds.get("retired") or None)
        return UpdateResult(outs={**state_of(news), **outs})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # Where the copies live replaces the gate (a new place starts without a champion); everything
        # else is a new round, decided in place so that the champion in the state carries over.
        replaces = changed_keys(olds, news, ("model", *self.location_keys))
        changes = bool(replaces) or bool(changed_keys(olds, news, DECISION_KEYS))
        champion = olds.get("champion") or None
        if not changes and champion and not self.kept(olds, str(champion["artifact"])):
            changes = True  # the champion's copy was removed behind the stack's back: decide again
        if not changes and not same_run(olds.get("challenger"), self.evaluate(news)):
            changes = True  # a new run under the same job name (retrained in place): judge it
        return DiffResult(changes=changes, replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, state_of(props))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        for kind in ("champion", "retired"):
            record = props.get(kind) or None
            if record and record.get("artifact"):
                log(f"gate {props.get('model')}: removing the {kind}'s copy {record['artifact']}")
                self.discard(props, str(record["artifact"]))

    def serving(self, props: Mapping[str, Any], artifact: str) -> bool:
        """Whether something still serves the copy `artifact`, where the stack can ask (False otherwise)."""
        return False

    def _serves_instead(
        self, props: Mapping[str, Any], retired: Mapping[str, Any], champion: Mapping[str, Any], copy: str
    ) -> bool:
        return (
            champion.get("artifact") not in (None, copy)
            and self.serving(props, str(retired["artifact"]))
            and not self.serving(props, str(champion["artifact"]))
        )

    def _restored(self, props: Mapping[str, Any], champion: Mapping[str, Any]) -> dict[str, Any] | None:
        """The champion whose copy was removed behind the stack's back, copied again from the artifact its
        training run left (`source_artifact`): it is still the model to beat, and what serves it may need
        the copy. Without a source to copy from, the update fails (forcePromotion: decided without it)."""
        model, artifact = props["model"], champion["artifact"]
        source = champion.get("source_artifact")
        accuracy = readable_accuracy(champion.get("accuracy"))
        try:
            if not source:
                raise GateError("the state records no source_artifact to copy it from")
            warn(
                f"gate {model}: the champion's copy {artifact} is gone (removed behind the stack's back); "
                f"restoring it from {source}"
            )
            name = str(champion.get("copy_name") or champion["source"])
            copy = self.keep(props, Candidate(name, str(source), accuracy))
        except Exception as error:
            if props.get("force_promotion"):
                warn(
                    f"gate {model}: the champion's copy {artifact} is gone and could not be restored "
                    f"({error}); forcePromotion is true: deciding without a champion"
                )
                return None
            raise GateError(
                f"gate {model}: the champion's copy {artifact} is gone (removed behind the stack's back) and "
                f"could not be restored from its source {source}: {error}. The gate does not judge a "
                "challenger without the champion it must beat: put the copy back, or run once with "
                "`pulumi config set forcePromotion true` to serve the challenger."
            ) from error
        return {**champion, "artifact": copy}

    # -- one round of the rule ------------------------------------------------------------------

    def _round(
        self, props: Mapping[str, Any], champion: Mapping[str, Any] | None, retired: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        model = str(props["model"])
        challenger = self.evaluate(props)
        if same_run(champion, challenger):
            verdict = Verdict(
                Decision.CHAMPION, "the challenger is the serving champion already (the same training run)"
            )
        elif champion and _reran_to_a_tie(champion, challenger):
            # Judged, and a tie: promoting it would only replace what serves with an equal model.
            verdict = Verdict(
                Decision.CHAMPION,
                f"a new run of the champion's job scored the same accuracy ({challenger.accuracy:.4f}): "
                "the champion is kept, nothing to replace",
            )
        else:
            accuracy = champion.get("accuracy") if champion else None
            verdict = decide(
                challenger.accuracy,
                float(accuracy) if accuracy is not None else None,
                rule_of(props),
                challenger.unreadable_because,
            )
        message = f"gate {model}: challenger {challenger.source}: {verdict.reason}"
        if verdict.decision is Decision.HELD and not champion:
            raise GateError(
                f"{message}\nNo endpoint is created for {model} until a model passes the gate: improve the "
                f"model (mnist-platform:hyperparameters), lower mnist-platform:minAccuracy (now "
                f"{float(props['min_accuracy']):.4f}) or set forcePromotion, then run `pulumi up` again."
            )
        if verdict.promotes:
            copy_name = _copy_name(challenger, champion, retired)
            copy = self.keep(props, replace(challenger, source=copy_name))
            if self.discards_retired_on_promotion and retired and retired.get("artifact") not in (None, copy):
                if champion and self._serves_instead(props, retired, champion, copy):
                    # The last update did not take (its check failed, or its canary was rolled back): the
                    # retired copy is what still serves, the champion's never did. Keep the served one.
                    log(f"gate {model}: {retired['artifact']} still serves; removing {champion['artifact']}")
                    self.discard(props, str(champion["artifact"]))
                    champion = retired
                else:
                    self.discard(props, str(retired["artifact"]))
            retired = champion
            champion = {**challenger.record(artifact=copy), "source_artifact": challenger.artifact}
            if copy_name != challenger.source:
                champion["copy_name"] = copy_name
        (warn if verdict.decision in (Decision.HELD, Decision.FORCED) else log)(message)
        assert champion is not None
        return {
            "champion": dict(champion),
            "champion_artifact": str(champion["artifact"]),
            "challenger": challenger.record(decision=verdict.decision.value, reason=verdict.reason),
            "retired": dict(retired) if retired else None,
        }


def same_run(record: Mapping[str, Any] | None, candidate: Candidate) -> bool:
    """Whether `record` (a champion or challenger in the gate's state) is the training run `candidate` is.

    The job's name is not enough: a later run can take an earlier one's name (a reverted spec retrains
    under its old name; SageMaker reuses the name of a deleted job). So a run is its name, when it finished
    and the metrics it reported, which every stack's `evaluate` reads from the run itself."""
    if not record or record.get("source") != candidate.source:
        return False
    return record.get("trained") == candidate.trained and dict(record.get("metrics") or {}) == dict(
        candidate.metrics
    )


def _reran_to_a_tie(champion: Mapping[str, Any], challenger: Candidate) -> bool:
    """A new run of the champion's own job (its folder trained again, the same spec) scoring the same."""
    accuracy = readable_accuracy(champion.get("accuracy"))
    return (
        champion.get("source") == challenger.source
        and accuracy is not None
        and challenger.accuracy is not None
        and abs(challenger.accuracy - accuracy) <= TIE_EPSILON
    )


def _copy_name(
    challenger: Candidate, champion: Mapping[str, Any] | None, retired: Mapping[str, Any] | None
) -> str:
    """What the challenger's champion copy is named after: its job, or, when a copy of an earlier run of the
    same name is still kept (a reused name), its job and a hash of this run, so that neither overwrites the
    other while something may still serve it."""
    if not any(record and record.get("source") == challenger.source for record in (champion, retired)):
        return challenger.source
    return f"{challenger.source}-{content_hash([challenger.trained, dict(challenger.metrics)], length=8)}"


_SUMMARY_KEYS = ("artifact", "accuracy", "trained", "source")


def models_entry(
    champion: pulumi.Input[dict], challenger: pulumi.Input[dict]
) -> pulumi.Output[dict[str, Any]]:
    """One model's entry of the `models` stack output: what is served (`artifact`, `metrics`, the contract
    of DESIGN.md) and the gate's view, `champion` and `challenger` (with the decision and its reason)."""

    def entry(values: list[Any]) -> dict[str, Any]:
        served, latest = dict(values[0] or {}), dict(values[1] or {})
        # Unknown values (an accuracy that could not be read, no training time) are left out, as Pulumi
        # leaves nulls out of a registered output.
        return {
            "artifact": served.get("artifact"),
            "metrics": _known({**dict(served.get("metrics") or {}), "accuracy": served.get("accuracy")}),
            "champion": _known({key: served.get(key) for key in _SUMMARY_KEYS}),
            "challenger": _known({key: latest.get(key) for key in (*_SUMMARY_KEYS, "decision", "reason")}),
        }

    return pulumi.Output.all(champion, challenger).apply(entry)


def _known(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
