"""Local stand-ins of the three APIs: real HTTP servers on 127.0.0.1, strict about their contracts.

They are the demo's default targets and what integration tests and benchmarks talk to. Each keeps
its state in memory, records what it received, and has knobs (:class:`Knobs`) for latency, a share
of 429/500 answers, dropped connections and token lifetime.
"""
