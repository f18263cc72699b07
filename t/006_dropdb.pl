# The worker never blocks DROP DATABASE of the database it serves, does not
# hammer the log while that database is gone, comes back when it is created
# again, and reconnects at once when a drop fails; with two workers too.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SamTest;
use Test::More;
use Time::HiRes qw(time);

my $mock = start_mock();
my $node = new_sam_node('dropdb', $mock, conf => "sam.database_name = 'app'\n");
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION sam_ext');
my $worker = "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'sam_ext worker' AND datname = 'app'";
ok($node->poll_query_until('postgres', $worker), 'the worker serves database app');

my $t0 = time();
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE app');
my $took = time() - $t0;
is($ret, 0, 'DROP DATABASE app succeeds without FORCE') or diag($err);
cmp_ok($took, '<', 5, sprintf('promptly (%.1f s)', $took));

my $log_before = -s $node->logfile;
sleep 3;    # a window in which a restart loop would log FATAL every second
my $log = slurp_file($node->logfile, $log_before);
unlike($log, qr/FATAL:  database "app" does not exist/, 'no FATAL loop while the database is gone');
like(slurp_file($node->logfile), qr/sam_ext worker waits: database "app"/, 'the worker says it waits');

$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION sam_ext');
ok($node->poll_query_until('postgres', $worker), 'CREATE DATABASE app: the worker serves it again');

# a drop that fails (someone else is connected): the worker reconnects at once
my $bg = $node->background_psql('app');
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE app');
isnt($ret, 0, 'a drop that fails because another session is connected');
like($err, qr/is being accessed by other users/, 'fails for that reason, not because of the worker');
ok($node->poll_query_until('postgres', $worker), 'the worker is back on the database');
$bg->quit;

# a drop refused anyway leaves the worker connected: by a role that does not own the database,
# inside a transaction block (any role used to disconnect the workers this way, every time)
my $worker_pid = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'sam_ext worker' AND datname = 'app'";
my $pid = $node->safe_psql('postgres', $worker_pid);
$node->safe_psql('postgres', 'CREATE ROLE mallory LOGIN');
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE app', extra_params => [ '-U', 'mallory' ]);
like($err, qr/must be owner of database app/, 'a role that does not own the database may not drop it');
($ret, $out, $err) = $node->psql('postgres', 'BEGIN; DROP DATABASE app; COMMIT');
like($err, qr/DROP DATABASE cannot run inside a transaction block/, 'nor may a drop inside a transaction block');
is($node->safe_psql('postgres', $worker_pid), $pid, 'neither disconnected the worker');

# a drop cancelled while it waits for the worker to leave (statement_timeout): the worker comes back
($ret, $out, $err) = $node->psql('postgres', "SET statement_timeout = '1ms'; DROP DATABASE app");
like($err, qr/canceling statement due to statement timeout/, 'a drop cancelled by statement_timeout');
ok($node->poll_query_until('postgres', $worker), 'the worker is back on the database after the cancelled drop');

# two workers (sam.workers = 2): the drop waits for both to disconnect, and both come back
$node->append_conf('postgresql.conf', "sam.workers = 2\n");
$node->restart;
my $workers = "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'sam_ext worker' AND datname = 'app'";
ok($node->poll_query_until('postgres', $workers), 'two workers serve database app');
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE app');
is($ret, 0, 'DROP DATABASE app succeeds with two workers connected') or diag($err);
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION sam_ext');
ok($node->poll_query_until('postgres', $workers), 'CREATE DATABASE app: both workers serve it again');

$node->stop;
$mock->{handle}->kill_kill;
done_testing();
