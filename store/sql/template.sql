-- Templates: registered at start-up, resolved for each request.

-- name: template_register
-- Inserts a template, or updates it when its content hash changed.
INSERT INTO tasker.templates AS t (namespace, name, version, version_major, version_minor,
    version_patch, version_pre, description, hash, definition, source)
VALUES (@namespace, @name, @version, @major, @minor, @patch, @pre, @description, @hash, @definition, @source)
ON CONFLICT (namespace, name, version) DO UPDATE
SET description = EXCLUDED.description, hash = EXCLUDED.hash,
    definition = EXCLUDED.definition, source = EXCLUDED.source, updated_at = now()
WHERE t.hash <> EXCLUDED.hash;

-- name: template_list
SELECT template_id, namespace, name, version, description, hash,
    jsonb_array_length(definition->'steps'), source, registered_at, updated_at
FROM tasker.templates
ORDER BY namespace, name, version_major DESC, version_minor DESC, version_patch DESC, version_pre;

-- name: template_newest
SELECT template_id, version, hash FROM tasker.templates
WHERE namespace = @namespace AND name = @name
ORDER BY version_major DESC, version_minor DESC, version_patch DESC,
    version_pre = '' DESC, version_pre DESC
LIMIT 1;

-- name: template_version
SELECT template_id, version, hash FROM tasker.templates
WHERE namespace = @namespace AND name = @name AND version = @version;

-- name: template_definition
SELECT definition, hash FROM tasker.templates WHERE template_id = @id;

-- name: template_known
-- Which part of a template reference is known.
SELECT EXISTS (SELECT 1 FROM tasker.templates WHERE namespace = @namespace),
    EXISTS (SELECT 1 FROM tasker.templates WHERE namespace = @namespace AND name = @name);
