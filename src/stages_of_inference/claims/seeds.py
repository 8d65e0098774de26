"""The seed studies' claims (self-repair, sequence continuation, concept features): a placeholder
until that module is written; it registers nothing."""
