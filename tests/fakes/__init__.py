"""Local fakes of remote services for the tests (never imported by the product).

- :mod:`tests.fakes.realtime_server`: a fake OpenAI Realtime WebSocket server. The real ``openai``
  SDK is pointed at it by base URL; every client event it receives and every server event it sends
  is validated against the SDK's own pydantic types, and scripted scenarios (greeting, reply on
  speech, barge-in, function calls, drops, error events) drive the conversation.

Everything here binds to 127.0.0.1 only and every wait is bounded.
"""

__all__: list[str] = []
