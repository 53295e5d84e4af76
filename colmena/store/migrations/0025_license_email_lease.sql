-- A license email's sending lease, instead of a session advisory lock held across SMTP.
--
-- sending_until: set by the worker that claims the email (in the transaction that stores its
-- link), cleared when the server accepted the message or the attempt failed. While it lies in
-- the future no other worker sends the email; a worker that died mid-send leaves it to expire
-- (COLMENA_LICENSE_SEND_LEASE_S). The claim is an UPDATE of the row, so two claims serialise
-- on the row lock and the second re-reads the first's lease.
ALTER TABLE license_emails ADD COLUMN sending_until timestamptz;
