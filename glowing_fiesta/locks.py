"""PostgreSQL advisory locks of the service, defined once.

They use the two-key form (namespace, key), so the service's locks never collide with another
application's sharing the database, nor with each other: singletons share one namespace with a
fixed second key, per-row locks get a namespace of their own keyed by the row's id.
"""

# Singleton locks: (NAMESPACE, one of the keys below).
NAMESPACE = 0x6766  # "gf"
RETENTION_RUN = 0x7265  # "re": a retention run is in progress
COMPACTION_RUN = 0x636F  # "co": a day's compaction is in progress

# Series creation for one metric: (SERIES_NAMESPACE, metric id).
SERIES_NAMESPACE = 0x6773  # "gs"

# Evaluation of one rule group: (RULE_GROUP_NAMESPACE, a 32-bit hash of the group's key).
RULE_GROUP_NAMESPACE = 0x6172  # "ar"
