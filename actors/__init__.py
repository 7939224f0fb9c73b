"""Everything that owns a thread: the ESL link, supervisor, call actors, CRM, DB, CDR."""
