"""Prometheus metrics, one registry per app (so several apps in one process do not clash).

Labels are bounded: the route template (never the raw path), the status code, the model name.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "medserve_requests",
            "HTTP requests by route template and status code",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "medserve_request_duration_seconds",
            "Time from request start to response end, by route template",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_duration = Histogram(
            "medserve_inference_duration_seconds",
            "Time the model's runtime takes to run it (medserve_model_runtime), by model",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "medserve_model_ready",
            "1 when the model loaded and passed its self-test",
            ["model"],
            registry=self.registry,
        )
        self.model_runtime = Gauge(
            "medserve_model_runtime",
            "1 for the runtime that runs the model (onnxruntime or openvino)",
            ["model", "runtime"],
            registry=self.registry,
        )
        self.inflight = Gauge(
            "medserve_inferences_in_flight",
            "Inferences running or waiting for a slot",
            registry=self.registry,
        )
        self.pipeline_runs = Counter(
            "medserve_pipeline_runs",
            "Admitted work run, by thread: event_loop (short and alone, MEDSERVE_INLINE_MAX_MS) "
            "or worker (the inference threads)",
            ["thread"],
            registry=self.registry,
        )
        # labelled children kept per label values (bounded: route templates, status codes,
        # model names); ``labels()`` checks its arguments under a lock on every call
        self._inference: dict[str, Histogram] = {}
        self._requests: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def observe_inference(self, model: str, seconds: float) -> None:
        """``inference_duration.labels(model=model).observe(seconds)``."""
        child = self._inference.get(model)
        if child is None:
            child = self._inference[model] = self.inference_duration.labels(model=model)
        child.observe(seconds)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """One answered request: ``requests`` counted and ``request_duration`` observed."""
        children = self._requests.get((endpoint, status))
        if children is None:
            children = (
                self.requests.labels(endpoint=endpoint, status=str(status)),
                self.request_duration.labels(endpoint=endpoint),
            )
            self._requests[(endpoint, status)] = children
        children[0].inc()
        children[1].observe(seconds)
