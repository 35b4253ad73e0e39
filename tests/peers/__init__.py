"""Test peers and helpers for the integration tests.

- :mod:`tests.peers.pcap`: read/write libpcap (and read pcapng) files of RTP over UDP.
- :mod:`tests.peers.audio`: G.711, WAV I/O, normalized cross-correlation, silence checks.
- :mod:`tests.peers.sipp`: run SIPp scenarios (``tests/sipp/*.xml``) as a subprocess.
- :mod:`tests.peers.pjsua_peer`: a PJSIP (pjsua2) softphone and echo server, run as subprocesses.

Everything here binds to 127.0.0.1 only and every wait is bounded.
"""

__all__: list[str] = []
