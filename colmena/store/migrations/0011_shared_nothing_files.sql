-- Hosts share no writable directory, so nothing that a download or an email needs lives in a
-- file any more.
--
-- A license package is assembled by whichever ingress serves the download, from the read-only
-- product directory and the license row; the worker that emails a link records the package's
-- SHA-256 and size, which the ingress checks before spending the link. No package file exists,
-- so neither its path nor its build time is kept.
ALTER TABLE licenses
    DROP COLUMN package_path,
    DROP COLUMN package_built_at;

-- The rendered PDF is kept with the stamped XML (rendering costs ~0.3 s of CPU, done once), so
-- a worker on any host emails it without rendering again. xml_path and pdf_path now only say
-- where a worker last exported copies for the accountant (COLMENA_CFDI_STORAGE_DIR), if it did.
ALTER TABLE invoices ADD COLUMN pdf bytea;
