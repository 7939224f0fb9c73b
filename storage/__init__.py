"""peewee models and database set-up."""
