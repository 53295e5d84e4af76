"""The messaging machinery: broker and middleware, outbox publishing and relay, dead letters,
the scheduler, and what a process holds open (resources) and checks at start-up.

It knows nothing of any domain: actors and scheduled jobs register themselves here, and the
entry points (`colmena.actors.boot`, `colmena dev`, the CLI) hand the registered ones in.
"""
