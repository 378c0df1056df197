"""What a metric returns: its numbers and the `Protocol` that produced them (the metric contract's result)."""

from __future__ import annotations

import math
from typing import Any

import attrs


@attrs.frozen
class Protocol:
    """How a score was obtained. Two scores are comparable only if their protocols agree."""

    n_generated: int
    n_reference: int
    reference_split: str | None
    extractor: str
    weights_hash: str
    seed: int
    dataset: str = ""
    #: The protocol's name: "dalle-kit" (this toolkit's own) or the name a metric gives a published one it follows.
    name: str = "dalle-kit"
    #: Where the protocol was published, only when the score followed it step for step (sizes included); else "".
    published: str = ""
    #: How the images were drawn when not plainly (the pipeline's `sampling()`: re-ranking, guidance); "" if plain.
    sampling: str = ""

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def line(self) -> str:
        ref = f"{self.n_reference} {self.dataset}/{self.reference_split}" if self.reference_split else "none"
        return (
            f"protocol={self.name} ({'published: ' + self.published if self.published else 'ours'}), "
            f"n_generated={self.n_generated}, reference={ref}, extractor={self.extractor}, "
            f"weights={self.weights_hash[:16] or '-'}, seed={self.seed}"
            + (f", sampling={self.sampling}" if self.sampling else "")
        )


@attrs.frozen
class MetricResult:
    """A metric's numbers (name -> float), the protocol behind them and optional details (probe accuracies...)."""

    values: dict[str, float]
    protocol: Protocol
    details: dict[str, Any] = attrs.field(factory=dict)

    def check(self, metric: str) -> MetricResult:
        """Raise if the result breaks the contract: a non-empty dict of finite floats and a Protocol."""
        if not isinstance(self.protocol, Protocol):
            raise TypeError(f"metric '{metric}' returned no Protocol with its result")
        if not self.values:
            raise TypeError(f"metric '{metric}' returned no values")
        for key, value in self.values.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"metric '{metric}' returned {key}={value!r}, not a finite number")
        return self

    def row(self, metric: str) -> dict[str, Any]:
        """The metrics.jsonl fields: metric name, values (flat), protocol and details."""
        return {
            "metric": metric,
            **{k: float(v) for k, v in self.values.items()},
            "protocol": self.protocol.to_dict(),
            **({"details": self.details} if self.details else {}),
        }

    def line(self, metric: str) -> str:
        """One line: ``fid: fid=12.345  [protocol ...]``."""
        values = "  ".join(f"{k}={v:.6g}" for k, v in self.values.items())
        return f"{metric}: {values}  [{self.protocol.line()}]"
