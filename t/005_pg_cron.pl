# pg_cron really fires a sam job (sam.schedule_jobs with an every-minute
# override), and the run appears both in cron.job_run_details and in
# sam.job_runs; sam.unschedule_jobs removes exactly sam's jobs.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SamTest;
use Test::More;

my $mock = start_mock();
my $node = new_sam_node('pg_cron', $mock, conf => "cron.use_background_workers = on\nmax_worker_processes = 16\n");
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
$node->safe_psql('postgres', "SELECT cron.schedule('not-sam', '0 0 1 1 *', 'SELECT 1')");
my $r = json_query($node, q{SELECT sam.schedule_jobs('{"execute-scheduled-campaigns": "* * * * *"}')});
is(scalar @{ $r->{jobs} }, 8, 'schedule_jobs created the eight jobs');

# pg_cron has minute granularity: wait for the next minute's run
local $PostgreSQL::Test::Utils::timeout_default = 150;
ok($node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM cron.job_run_details d JOIN cron.job j USING (jobid)
	  WHERE j.jobname = 'sam-execute-scheduled-campaigns' AND d.status = 'succeeded'"),
	'pg_cron fired sam-execute-scheduled-campaigns and recorded it in cron.job_run_details');
is($node->safe_psql('postgres', q{SELECT return_message FROM cron.job_run_details d JOIN cron.job j USING (jobid)
	WHERE j.jobname = 'sam-execute-scheduled-campaigns' ORDER BY runid LIMIT 1}), 'SELECT 1', 'the command ran (one row answered)');
ok($node->safe_psql('postgres', "SELECT count(*) > 0 FROM sam.job_runs WHERE job = 'execute-scheduled-campaigns' AND status = 'succeeded'") eq 't',
	'the same run is in sam.job_runs');
is($node->safe_psql('postgres', "SELECT scheduled AND NOT late AND runs_24h > 0 FROM sam.job_health WHERE job = 'execute-scheduled-campaigns'"),
	't', 'sam.job_health shows it scheduled, on time, with runs');
is(json_query($node, 'SELECT sam.unschedule_jobs()')->{unscheduled}, 8, 'unschedule_jobs removed sam\'s eight jobs');
is($node->safe_psql('postgres', 'SELECT string_agg(jobname, \',\') FROM cron.job'), 'not-sam', 'and nothing else');

$node->stop;
$mock->{handle}->kill_kill;
done_testing();
