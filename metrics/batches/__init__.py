"""Asynchronous ingestion: the outbox of batches, how a worker claims one and how it ends.

A request sent with `Prefer: respond-async` is validated as usual, then stored as one
`IngestBatch` row (the outbox). Only after that commit is the batch id sent to Celery, so a
message can be lost (Redis restarted or flushed, a worker killed) but a batch cannot: the sweeper
sends unfinished batches again.

Running a batch twice never stores a point twice:

1. The claim raises `attempts` on a row it could lock with SKIP LOCKED. A row locked by another
   transaction is being written right now by a live worker; a `running` row that nobody holds has
   lost its worker (killed mid-batch) and is taken over at once. `attempts` numbers the claims.
2. The points are written, and the batch marked done, in one transaction that first locks the
   row *with the claim's number*: if a newer claim took the batch over, the old one writes nothing.
3. A message redelivered after that commit (a worker killed before its ack) finds `done`.

Messages wake workers; they do not carry the work. A request sends one only when no wake-up is
queued already (a Redis key, set with the send and cleared by the task that starts on it), and a
task goes on after its own batch with every pending one, in groups, waking one more worker when
it finds more. A burst of 1000 acknowledged batches so costs a handful of messages instead of
1000 (each an empty run for a batch already written with another's group). A batch left without
a message (a lost wake-up, a lost key) is sent again by the sweeper, as before.

The functions that work on outbox rows are named `outbox_*`; a row keeps the name the API gives
it, a batch (`batch_id`, `/api/batches/<id>`). Three modules, imported by their callers directly:

- `dispatch.py`: store a batch in the outbox and send its id to the workers, one wake-up at a time;
- `process.py`: claim a batch (and companions), write its points, end it; follow the pending ones;
- `sweep.py`: send again the batches whose message was lost, drain them, retry failed ones.
"""
