-- 0015: the message's two CHECK constraints stop reading the whole message on every write of a job
-- (issue 13: the database's cost per job).
--
-- PostgreSQL checks every CHECK constraint of a row on every UPDATE, whatever the UPDATE changes. A
-- job is written three times (claim, accepted, finished), and chat_jobs_message_length (length(), which
-- counts characters) and chat_jobs_message_not_blank (a regular expression over the whole text) read the
-- message each time: for a message past about 2 KB, stored compressed, that is a decompression too.
-- With 3,000-character messages that was a quarter of the database's CPU per job (store floor, S4).
--
-- Same names, same rules, cheaper order: the byte length (octet_length, read from the value's header
-- without decompressing it) settles the length for any message of at most 8,000 bytes, and the first
-- 64 characters (a partial decompression) settle that a message is not blank unless they are all blank
-- themselves. Only a message that passes neither shortcut is read whole, as before.

ALTER TABLE uppzy.chat_jobs
  DROP CONSTRAINT chat_jobs_message_length,
  ADD CONSTRAINT chat_jobs_message_length
    CHECK (octet_length(message) >= 1 AND (octet_length(message) <= 8000 OR length(message) <= 8000)) NOT VALID,
  DROP CONSTRAINT chat_jobs_message_not_blank,
  ADD CONSTRAINT chat_jobs_message_not_blank
    CHECK (NOT uppzy.is_blank(substr(message, 1, 64)) OR NOT uppzy.is_blank(message)) NOT VALID;

-- Validate them when every existing row meets them (a row breaking one broke the old rule too, left
-- NOT VALID by 0007); otherwise they stay NOT VALID, holding for every new write, and a NOTICE says so.
-- Validation reads every message once: about a second per million rows.
DO $$
DECLARE
  c text;
BEGIN
  FOREACH c IN ARRAY ARRAY['chat_jobs_message_length', 'chat_jobs_message_not_blank'] LOOP
    BEGIN
      EXECUTE format('ALTER TABLE uppzy.chat_jobs VALIDATE CONSTRAINT %I', c);
    EXCEPTION WHEN check_violation THEN
      RAISE NOTICE '0015_message_checks_without_detoast: uppzy.chat_jobs keeps rows that break %; the '
        'constraint is NOT VALID (it holds for new writes). Fix or purge those rows, then ALTER TABLE '
        'uppzy.chat_jobs VALIDATE CONSTRAINT %.', c, c;
    END;
  END LOOP;
END;
$$;
