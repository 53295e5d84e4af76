-- Values scraped from `colmena dev`'s recorded sandboxes (a BCV page and Binance adverts that
-- are sample data, not rates) are marked, and every place that shows a rate says so.

ALTER TABLE rates ADD COLUMN sandbox boolean NOT NULL DEFAULT false;
