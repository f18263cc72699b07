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
