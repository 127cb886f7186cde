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

-- name: template_resolve
-- The template a request names — version @version, or the newest when it is
-- empty — and, on a miss, whether the namespace and the name are known. One
-- statement, so the match and the explanation of a miss see the same
-- templates: a template committed meanwhile is either found or unknown, never
-- "known but no such version".
SELECT t.template_id, t.version, t.hash,
    CASE WHEN t.template_id IS NULL THEN EXISTS (SELECT 1 FROM tasker.templates WHERE namespace = @namespace) END,
    CASE WHEN t.template_id IS NULL THEN EXISTS (SELECT 1 FROM tasker.templates
        WHERE namespace = @namespace AND name = @name) END
FROM (SELECT) one
LEFT JOIN LATERAL (
    SELECT template_id, version, hash FROM tasker.templates
    WHERE namespace = @namespace AND name = @name AND (@version = '' OR version = @version)
    ORDER BY version_major DESC, version_minor DESC, version_patch DESC,
        version_pre = '' DESC, version_pre DESC
    LIMIT 1
) t ON true;

-- name: template_definition
SELECT definition, hash FROM tasker.templates WHERE template_id = @id;

-- name: template_show
SELECT template_id, namespace, name, version, description, hash,
    jsonb_array_length(definition->'steps'), source, registered_at, updated_at, definition
FROM tasker.templates WHERE template_id = @id;
