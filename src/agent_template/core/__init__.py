"""The engine: run loop, scheduler, queues, streams, events, hooks, metrics. No SDKs here."""
