-- The template renderer: variables, fallbacks, escapes, plain-text values.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SELECT sam.render_template('Hi {first_name}!', '{"first_name": "Alice"}');
SELECT sam.render_template('Hi {first_name|there}!', '{}');
SELECT sam.render_template('Hi {first_name|there}!', '{"first_name": ""}');
SELECT sam.render_template('Hi {first_name|there}!', '{"first_name": null}');
SELECT sam.render_template('Hi { First_Name }, {company} ({title})', '{"first_name": "Zoé", "company": "Acme", "title": "CTO"}');
SELECT sam.render_template('{{literal}} and }} and {{', '{}');
SELECT sam.render_template('{n} items, active: {active}', '{"n": 42, "active": true}');
SELECT sam.render_template('Hi {x|}!', '{}');
SELECT sam.render_template('Hi 👋 {first_name}', '{"first_name": "José 🚀"}');
-- values are inserted as text, never interpreted again
SELECT sam.render_template('Hi {first_name}', '{"first_name": "{company} %s %n ''; DROP TABLE x; --"}');
SELECT sam.render_template('', '{}');
SELECT sam.render_template('no variables', NULL);
-- a NULL template and variables that are not an object are errors (a NULL template crashed the server)
SELECT sam.render_template(NULL, '{}');
SELECT sam.render_template(NULL, NULL);
-- a template repeating a long value cannot build more than 16 MB (a few MB of input built a gigabyte)
SELECT sam.render_template(repeat('{a}', 20000), jsonb_build_object('a', repeat('x', 1000)));
SELECT length(sam.render_template(repeat('{a}', 16000), jsonb_build_object('a', repeat('x', 1000)))) AS under_the_limit;
SELECT (sam._try_render(repeat('{a}', 20000), jsonb_build_object('a', repeat('x', 1000))))[2] AS quiet;
SELECT sam.render_template('Hi {x|there}', '[1]');
SELECT sam.render_template('Hi {x|there}', '"x"');
-- errors name the problem and its position
SELECT sam.render_template('Hi {first_name}', '{}');
SELECT sam.render_template('Hi {first_name', '{}');
SELECT sam.render_template('Hi {first name}', '{}');
SELECT sam.render_template('Hi {1st}', '{}');
SELECT sam.render_template('Hi }', '{}');
SELECT sam.render_template('Hi {a|b', '{}');
SELECT sam.render_template('Hi {}', '{}');
SELECT sam.template_variables('Hi {first_name|there}, {company}. {{x}}');
SELECT sam.template_variables('plain');
SELECT length(sam.render_template(repeat('a', 1000000) || '{x}', '{"x": "b"}'));
-- the queueing jobs render from a prospect's fields: the same answer as from sam._prospect_vars(p),
-- a standard field that is set (even empty) over a custom variable of its name, NULL fields not
CREATE TEMP TABLE render_cases (variables jsonb, first_name text, last_name text, company text, title text);
INSERT INTO render_cases VALUES
    ('{}', 'Alice', 'Smith', 'Acme', 'CTO'),
    ('{"first_name": "Custom", "topic": "databases"}', NULL, NULL, NULL, NULL),
    ('{"first_name": "Custom", "company": "Old"}', '', NULL, 'New', NULL),
    ('{"title": 7, "topic": true}', NULL, 'Lee', NULL, NULL),
    ('{"topic": ""}', 'Zoé 🚀', NULL, NULL, '{company}');
SELECT t.template, r.first_name, r.company, x.fields, x.fields IS NOT DISTINCT FROM x.jsonb AS same
  FROM render_cases r
 CROSS JOIN (VALUES ('Hi {first_name|there} of {company|your company} ({title|?}) on {topic|x}'),
                    ('{last_name}'), ('Hi {first_name')) t (template)
 CROSS JOIN LATERAL (
     SELECT sam._try_render(t.template, r.variables, r.first_name, r.last_name, r.company, r.title) AS fields,
            sam._try_render(t.template, r.variables || jsonb_strip_nulls(jsonb_build_object(
                'first_name', r.first_name, 'last_name', r.last_name, 'company', r.company, 'title', r.title))) AS jsonb) x
 ORDER BY 1, 2, 3, 4;
SELECT sam._try_render(NULL, '{}', 'a', 'b', 'c', 'd') IS NULL AS null_template,
       sam._try_render('{first_name}', NULL, 'Ann', NULL, NULL, NULL) AS no_variables;
