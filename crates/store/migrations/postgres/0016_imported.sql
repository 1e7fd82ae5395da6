-- Bundles and appliances made by an import with `imported=true` (`hammr ... import`, not `create`)
-- say so, as UForge's documents do (hammr's template list shows it).
ALTER TABLE bundles ADD COLUMN imported BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE appliances ADD COLUMN imported BOOLEAN NOT NULL DEFAULT FALSE;
