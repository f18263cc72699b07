# SamTest.pm: shared helpers of sam_ext's TAP tests.
#
# Starts the mock Unipile server (test/mock_unipile) on a free loopback port,
# creates a PostgreSQL::Test::Cluster preloaded with pg_cron and sam_ext that
# points at it, and talks to the mock's control API (/_mock/...) over HTTP.
package SamTest;

use strict;
use warnings;

use Exporter 'import';
use File::Temp ();
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

our @EXPORT = qw(start_mock mock_call mock_log new_sam_node poll_until_ok json_query);

my $json = JSON::PP->new->canonical(1)->utf8(1);
my $http = HTTP::Tiny->new(timeout => 30, keep_alive => 0);

# the repository's root: tests run from it (TESTDIR is set by prove_installcheck)
sub root_dir
{
	return $ENV{TESTDIR} // '.';
}

# every mock started, stopped when the test script exits, however it exits: a test that
# dies (or forgets) must not leave a server running after the suite
my @started_mocks;

END
{
	my $status = $?;
	for my $h (@started_mocks)
	{
		eval { $h->kill_kill if $h->pumpable; };
	}
	$? = $status;
}

# start_mock starts the mock Unipile server; returns {port, url, api_key, handle}
sub start_mock
{
	my (%opts) = @_;
	my $bin = root_dir() . '/test/mock_unipile';
	die "mock server not built: $bin" unless -x $bin;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $key = $opts{api_key} // 'test-api-key-' . int(rand(1e9));
	my ($in, $out, $err) = ('', '', '');
	my @cmd = ($bin, '--port', $port, '--quiet');
	local $ENV{MOCK_UNIPILE_API_KEY} = $key;
	my $h = IPC::Run::start(\@cmd, \$in, \$out, \$err);
	my $deadline = time() + 20;
	while ($out !~ /listening on/ && time() < $deadline)
	{
		$h->pump_nb;
		usleep(20_000);
	}
	die "mock did not start: $out $err" unless $out =~ /listening on/;
	push @started_mocks, $h;
	return { port => $port, url => "http://127.0.0.1:$port", api_key => $key, handle => $h,
		out => \$out, err => \$err };
}

# mock_call sends a control request to the mock and decodes its JSON answer
sub mock_call
{
	my ($mock, $method, $path, $body) = @_;
	# (the key lets a test call the mock's Unipile API too, as the user would by hand)
	my %o = (headers => { 'X-API-KEY' => $mock->{api_key} });
	if (defined $body)
	{
		$o{content} = ref $body ? $json->encode($body) : $body;
		$o{headers}{'Content-Type'} = 'application/json';
	}
	my $r = $http->request($method, $mock->{url} . $path, \%o);
	die "mock $method $path failed: $r->{status} $r->{content}" unless $r->{success};
	return length($r->{content}) ? $json->decode($r->{content}) : undef;
}

# mock_log returns the mock's request log (array of entries)
sub mock_log
{
	my ($mock) = @_;
	my @items;
	my $since = 0;
	while (1)
	{
		my $r = mock_call($mock, 'GET', "/_mock/log?since=$since");
		push @items, @{ $r->{items} };
		last if !@{ $r->{items} } || $r->{next} == $since;
		$since = $r->{next};
	}
	return \@items;
}

# new_sam_node creates and starts a cluster preloaded with pg_cron and sam_ext
# that sends to the mock, with CREATE EXTENSION done
sub new_sam_node
{
	my ($name, $mock, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	my $keyfile = $node->basedir . '/unipile_api_key';
	open(my $fh, '>', $keyfile) or die "could not write $keyfile: $!";
	print $fh ($opts{api_key} // $mock->{api_key}) . "\n";
	close $fh;
	chmod 0600, $keyfile;
	my $extra = $opts{conf} // '';
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,sam_ext'
cron.database_name = 'postgres'
sam.database_name = 'postgres'
sam.unipile_dsn = '$mock->{url}'
sam.unipile_api_key_file = '$keyfile'
sam.retry_base_delay = '100ms'
sam.http_timeout = '2s'
sam.connect_timeout = '1s'
log_min_messages = 'log'
restart_after_crash = on
$extra
});
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION sam_ext');
	return $node;
}

# json_query runs a query returning one jsonb/json value and decodes it
sub json_query
{
	my ($node, $sql) = @_;
	my $out = $node->safe_psql('postgres', $sql);
	return $json->decode($out);
}

# poll_until_ok polls a query until it returns 't', failing the test otherwise
sub poll_until_ok
{
	my ($node, $sql, $what) = @_;
	my $ok = $node->poll_query_until('postgres', $sql);
	ok($ok, $what);
	return $ok;
}

1;
