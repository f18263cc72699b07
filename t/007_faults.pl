# The fault matrix: every Unipile failure the worker can meet, for some or
# all calls, and the worker or the whole server killed before, during and
# after a batch's HTTP calls.  Each case ends by comparing the mock's request
# log and state with the database: every queued action ends done or dead (with
# its error kept), none is lost, and no person is invited or messaged twice.
# Also: a clock jump of several days catches up within the caps.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SamTest;
use Test::More;
use Time::HiRes ();

my $max_attempts = 3;
my $mock = start_mock();
my $node = new_sam_node('faults', $mock, conf => qq{
sam.max_attempts = $max_attempts
sam.http_timeout = '1s'
});
mock_call($mock, 'POST', '/_mock/config', { echo_sent_messages => JSON::PP::false });

sub make_account
{
	my ($id, %o) = @_;
	my %args = (working_days => "'{1,2,3,4,5,6,7}'", work_start => "'00:00'", work_end => "'00:00'",
		spacing_min => "'0'", spacing_max => "'0'", %o);
	$node->safe_psql('postgres',
		"SELECT sam.create_account('$id', " . join(', ', map { "$_ => $args{$_}" } sort keys %args) . ")");
}

# a campaign of n prospects ACo<TAG>1..n; returns (campaign id, provider ids)
sub make_campaign
{
	my ($account, $tag, $n, $steps) = @_;
	my @ids = map { "ACo\U$tag\E$_" } 1 .. $n;
	my $st = defined $steps ? "'$steps'" : 'NULL';
	my $cid = $node->safe_psql('postgres',
		"SELECT sam.create_campaign('$account', 'c-$account', 'Hello {first_name|there}', $st)->>'campaign_id'");
	$node->safe_psql('postgres',
		"SELECT sam.add_prospects($cid, '[" . join(',', map { qq({"provider_id": "$_"}) } @ids) . "]')");
	return ($cid, @ids);
}

# until no call of the account is waiting (queued, in flight, failed)
sub settle
{
	my ($account, $what) = @_;
	return poll_until_ok($node,
		"SELECT count(*) = 0 FROM sam.outbox WHERE account_id = '$account' AND state IN ('queued', 'in_flight', 'failed')",
		"$what: every call of the account is final");
}

sub db_rows
{
	my ($sql) = @_;
	return [ map { [ split /\|/, $_, -1 ] } grep { length } split /\n/, $node->safe_psql('postgres', $sql) ];
}

# the mock's log of one route for one account: provider id or chat => [statuses]
sub posts_of
{
	my ($account, $re) = @_;
	my %by;
	for my $e (@{ mock_log($mock) })
	{
		next unless $e->{method} eq 'POST' && $e->{path} =~ $re && ($e->{account_id} // '') eq $account;
		my $who = ref $e->{body} eq 'HASH' ? ($e->{body}{provider_id} // $e->{body}{text} // '?') : '?';
		push @{ $by{$who} }, $e->{status};
	}
	return \%by;
}

# The comparison of an invitation case: the mock against the database.
#   expect: done (every invitation stands) or dead (none does)
sub check_invitations
{
	my ($label, $account, $cid, $expect, @ids) = @_;
	my $n = scalar @ids;
	my $rows = db_rows("SELECT p.provider_id, p.status, o.state, coalesce(o.error, ''), coalesce(o.error_type, ''),
			coalesce(p.last_error, ''), o.attempts
		  FROM sam.prospects p LEFT JOIN sam.outbox o ON o.prospect_id = p.id AND o.kind = 'invite'
		 WHERE p.campaign_id = $cid ORDER BY p.provider_id");
	is(scalar @$rows, $n, "$label: one invitation row per prospect, none lost, none queued twice");
	my $state = mock_call($mock, 'GET', "/_mock/state?account_id=$account");
	my %held;
	$held{ $_->{provider_id} }++ for @{ $state->{invitations} };
	my $posts = posts_of($account, qr{^/api/v1/users/invite$});
	my @bad;
	for my $r (@$rows)
	{
		my ($pid, $pstatus, $ostate, $err, $etype, $perr, $attempts) = @$r;
		push @bad, "$pid: the mock holds " . ($held{$pid} // 0) . ' invitations' if ($held{$pid} // 0) > 1;
		push @bad, "$pid: " . scalar(@{ $posts->{$pid} // [] }) . ' POSTs' if @{ $posts->{$pid} // [] } > $max_attempts;
		if ($expect eq 'done')
		{
			push @bad, "$pid: $pstatus/$ostate" unless $ostate eq 'done' && $pstatus eq 'connection_request_sent';
			push @bad, "$pid: done but no invitation at the mock" unless $held{$pid};
		}
		else
		{
			push @bad, "$pid: $pstatus/$ostate" unless $ostate eq 'dead' && $pstatus eq 'failed';
			push @bad, "$pid: dead without its error" unless length($err) && length($etype) && length($perr);
			push @bad, "$pid: dead but the mock holds an invitation" if $held{$pid};
			push @bad, "$pid: dead after $attempts attempts" unless $attempts == $max_attempts;
		}
	}
	is(join('; ', @bad), '', "$label: the mock's log and state agree with the database ($expect)");
}

# ---- invitations: every fault, for some calls (2) or all ----------------------------------
# "after": the call took effect at LinkedIn and only its answer was lost.
# (a 429 pauses the account's invitations instead: t/001_invitations.pl)
my @faults = (
	[ '500',        { status => 500 } ],
	[ '503',        { status => 503 } ],
	[ 'html',       { html => JSON::PP::true } ],
	[ 'garbage',    { garbage => JSON::PP::true } ],
	[ 'reset',      { drop => JSON::PP::true } ],
	[ 'slow',       { delay_ms => 1600 } ],
	[ 'reset_after',   { drop => JSON::PP::true, after => JSON::PP::true } ],
	[ 'garbage_after', { garbage => JSON::PP::true, after => JSON::PP::true } ],
	[ 'html_after',    { html => JSON::PP::true, after => JSON::PP::true } ],
	[ '500_after',     { status => 500, after => JSON::PP::true } ],
);
my $case = 0;
for my $f (@faults)
{
	my ($name, $fault) = @$f;
	for my $scope ('some', 'all')
	{
		$case++;
		my $acct = "acc-inv$case";
		my $label = "invite, $name, $scope calls";
		make_account($acct);
		my ($cid, @ids) = make_campaign($acct, "INV${case}X", 3);
		mock_call($mock, 'POST', '/_mock/faults', { method => 'POST', path_prefix => '/api/v1/users/invite',
			count => ($scope eq 'some' ? 2 : -1), %$fault });
		$node->safe_psql('postgres', "SELECT sam.start_campaign($cid)");
		settle($acct, $label);
		mock_call($mock, 'DELETE', '/_mock/faults');
		# a delay alone or an "after" fault lets the call happen: it is found by the check
		my $happens = $name eq 'slow' || $name =~ /_after$/;
		check_invitations($label, $acct, $cid, ($scope eq 'some' || $happens) ? 'done' : 'dead', @ids);
		sent_once_per_attempt($label, $acct);
	}
}

# Each attempt reaches the mock at most once: libcurl, which sends a request again by itself
# when a reused connection closes before any answer, must never do so with an invitation
# (the mock may have acted on the first one: "reset_after").  Crash cases are left out:
# the recovery gives back the attempt of a call in flight when the worker stopped.
sub sent_once_per_attempt
{
	my ($label, $account) = @_;
	my $posts = posts_of($account, qr{^/api/v1/users/invite$});
	my $rows = db_rows("SELECT p.provider_id, o.attempts FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id
		 WHERE o.account_id = '$account' AND o.kind = 'invite' ORDER BY 1");
	my @bad = map { "$_->[0]: " . scalar(@{ $posts->{ $_->[0] } // [] }) . " POSTs in $_->[1] attempts" }
	  grep { @{ $posts->{ $_->[0] } // [] } > $_->[1] } @$rows;
	is(join('; ', @bad), '', "$label: no invitation was sent twice in one attempt");
}

# ---- the worker killed before, during and after a batch's HTTP calls ---------------------
sub kill_worker
{
	my $pid = $node->safe_psql('postgres', 'SELECT sam.worker_pid()');
	kill 'KILL', $pid;
	$node->poll_query_until('postgres', "SELECT sam.worker_pid() IS NOT NULL AND sam.worker_pid() <> $pid")
	  or die 'the worker did not come back';
}

sub crash_case
{
	my ($label, $fault, $crash) = @_;
	$case++;
	my $acct = "acc-crash$case";
	make_account($acct);
	my ($cid, @ids) = make_campaign($acct, "CRASH${case}X", 5);
	mock_call($mock, 'POST', '/_mock/faults',
		{ method => 'POST', path_prefix => '/api/v1/users/invite', count => -1, %$fault });
	$node->safe_psql('postgres', "SELECT sam.start_campaign($cid)");
	poll_until_ok($node, "SELECT count(*) = 5 FROM sam.outbox WHERE account_id = '$acct' AND state = 'in_flight'",
		"$label: five calls committed in flight");
	$crash->($acct);
	mock_call($mock, 'DELETE', '/_mock/faults');
	settle($acct, $label);
	check_invitations($label, $acct, $cid, 'done', @ids);
	my $posts = posts_of($acct, qr{^/api/v1/users/invite$});
	my @twice = grep { (grep { $_ >= 200 && $_ < 300 } @{ $posts->{$_} // [] }) > 1 } @ids;
	is("@twice", '', "$label: no invitation was accepted twice by the mock");
}

# before: the calls are out but never reach Unipile (held, then dropped without effect)
crash_case('SIGKILL before the calls reach Unipile', { delay_ms => 1500, drop => JSON::PP::true }, sub { kill_worker(); });

# during: Unipile has acted, its answers are not back yet
crash_case('SIGKILL during the calls', { delay_ms => 1500 }, sub { kill_worker(); });

# after: the answers are back, the transaction recording them is held by a row lock
crash_case('SIGKILL after the answers, before they are recorded', { delay_ms => 1500 }, sub {
	my ($acct) = @_;
	my $holder = $node->background_psql('postgres', on_error_stop => 0);
	$holder->query_safe("BEGIN; SELECT count(*) FROM (SELECT 1 FROM sam.outbox WHERE account_id = '$acct' FOR UPDATE) s;");
	poll_until_ok($node,
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'sam_ext worker' AND wait_event_type = 'Lock'",
		'after: the worker waits to record the answers');
	my $ok = grep { $_->{path} eq '/api/v1/users/invite' && ($_->{account_id} // '') eq $acct && $_->{status} == 201 }
	  @{ mock_log($mock) };
	is($ok, 5, 'after: the mock answered all five');
	kill_worker();
	eval { $holder->quit; };
});

# ---- an immediate shutdown just after the answers were recorded ----------------------------
# The record does not wait for the WAL flush: it may be lost.  Lost or not, each invitation ends
# done, accepted once (a lost record leaves its call in flight: checked, never sent again).
{
	$case++;
	my $acct = "acc-norecord";
	# the WAL writer left alone for a while, so that the records are most likely lost
	$node->append_conf('postgresql.conf', "wal_writer_delay = '10s'");
	$node->reload;
	make_account($acct);
	my ($cid, @ids) = make_campaign($acct, 'NOREC', 5);
	$node->safe_psql('postgres', "SELECT sam.start_campaign($cid)");
	poll_until_ok($node, "SELECT count(*) = 5 FROM sam.outbox WHERE account_id = '$acct' AND state = 'done'",
		'just recorded: five answers recorded');
	my $log_offset = -s $node->logfile;
	$node->stop('immediate');
	$node->append_conf('postgresql.conf', "wal_writer_delay = '200ms'");
	$node->start;
	note('just recorded: the records were '
		  . ($node->log_contains('outbox rows were in flight when the worker stopped', $log_offset) ? 'lost' : 'kept'));
	settle($acct, 'just recorded');
	check_invitations('just recorded', $acct, $cid, 'done', @ids);
	my $posts = posts_of($acct, qr{^/api/v1/users/invite$});
	is(join(',', map { scalar @{ $posts->{$_} // [] } } @ids), '1,1,1,1,1',
		'just recorded: each invitation reached the mock once');
}

# ---- immediate shutdown with work queued and in flight -------------------------------------
# Also with synchronous_commit = off for the whole server: the worker's claim still reaches the
# disk before its call goes out (a lost claim would leave the row queued, sent again unchecked).
sub immediate_case
{
	my ($label, $tag) = @_;
	$case++;
	my $acct = "acc-$tag";
	make_account($acct, spacing_min => "'20 seconds'", spacing_max => "'20 seconds'");
	my ($cid, @ids) = make_campaign($acct, uc($tag), 4);
	mock_call($mock, 'POST', '/_mock/faults',
		{ method => 'POST', path_prefix => '/api/v1/users/invite', count => -1, delay_ms => 1500 });
	$node->safe_psql('postgres', "SELECT sam.start_campaign($cid)");
	poll_until_ok($node,
		"SELECT count(*) FILTER (WHERE state = 'in_flight') = 1 AND count(*) FILTER (WHERE state = 'queued') = 3"
		  . " FROM sam.outbox WHERE account_id = '$acct'",
		"$label: one call in flight, three queued for later");
	$node->stop('immediate');
	$node->start;
	mock_call($mock, 'DELETE', '/_mock/faults');
	is($node->safe_psql('postgres', "SELECT count(*) FROM sam.outbox WHERE account_id = '$acct'"), '4',
		"$label: the four calls survived the restart");
	$node->safe_psql('postgres', "SELECT sam.advance_clock('1 minute')");
	settle($acct, $label);
	check_invitations($label, $acct, $cid, 'done', @ids);
	my $posts = posts_of($acct, qr{^/api/v1/users/invite$});
	is(join(',', map { scalar @{ $posts->{$_} // [] } } @ids), '1,1,1,1',
		"$label: each invitation reached the mock once");
}

immediate_case('immediate shutdown', 'immediate');
$node->append_conf('postgresql.conf', "synchronous_commit = off\nwal_writer_delay = '10s'");
$node->reload;
immediate_case('immediate shutdown, synchronous_commit off', 'asyncsrv');
$node->append_conf('postgresql.conf', "synchronous_commit = on\nwal_writer_delay = '200ms'");
$node->reload;

# ---- messages: faults on follow-ups in a known chat ----------------------------------------
# prospects invited, then connected by a new_relation webhook; FU1 starts the chat (no fault),
# FU2 goes into it under the fault
my $steps = '[{"delay": "1 minute", "template": "first for {first_name|you}"}, {"delay": "1 minute", "template": "second"}]';
sub connected_campaign
{
	my ($acct, $tag, $n) = @_;
	my ($cid, @ids) = make_campaign($acct, $tag, $n, $steps);
	mock_call($mock, 'POST', '/_mock/relations', { account_id => $acct, provider_id => $_ }) for @ids;
	$node->safe_psql('postgres', "SELECT sam.start_campaign($cid)");
	settle($acct, "$tag: invitations");
	for my $p (@ids)
	{
		$node->safe_psql('postgres', qq{SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "$acct", "user_provider_id": "$p"}')});
	}
	is($node->safe_psql('postgres', "SELECT count(*) FROM sam.prospects WHERE campaign_id = $cid AND status = 'connected'"),
		$n, "$tag: connected");
	return ($cid, @ids);
}

sub run_follow_ups
{
	my $r = json_query($node, 'SELECT sam.process_follow_ups()');
	die 'process_follow_ups failed: ' . ($r->{error} // '') unless $r->{success};
	return $r;
}

# our messages in the mock's chats of the account: provider id => [texts]
sub chat_texts
{
	my ($acct) = @_;
	my %t;
	for my $c (@{ mock_call($mock, 'GET', "/_mock/state?account_id=$acct")->{chats} })
	{
		my $who = $c->{attendee} // $c->{attendee_provider_id} // '';
		push @{ $t{$who} }, map { $_->{text} } grep { ($_->{sender_provider_id} // '') ne $who } @{ $c->{messages} };
	}
	return \%t;
}

sub check_messages
{
	my ($label, $acct, $cid, $expect, @ids) = @_;
	my $texts = chat_texts($acct);
	my $rows = db_rows("SELECT p.provider_id, p.status, p.follow_up_sequence_index, o.state, coalesce(o.error, '')
		  FROM sam.prospects p LEFT JOIN sam.outbox o ON o.prospect_id = p.id AND o.idempotency_key = 'message:' || p.id || ':2'
		 WHERE p.campaign_id = $cid ORDER BY p.provider_id");
	is(scalar @$rows, scalar @ids, "$label: one FU2 row per prospect");
	my @bad;
	for my $r (@$rows)
	{
		my ($pid, $pstatus, $index, $ostate, $err) = @$r;
		my @mine = @{ $texts->{$pid} // [] };
		my $second = grep { $_ eq 'second' } @mine;
		push @bad, "$pid: FU2 $second times at the mock" if $second > 1;
		push @bad, "$pid: FU1 " . scalar(grep { /^first/ } @mine) . ' times' if (grep { /^first/ } @mine) != 1;
		if ($expect eq 'done')
		{
			push @bad, "$pid: $pstatus/$index/$ostate" unless $ostate eq 'done' && $index == 2 && $second == 1;
		}
		else
		{
			push @bad, "$pid: $pstatus/$index/$ostate" unless $ostate eq 'dead' && $pstatus eq 'failed' && $second == 0 && length $err;
		}
	}
	is(join('; ', @bad), '', "$label: the mock's chats agree with the database ($expect)");
}

# (a 429 pauses the account's messages instead: below)
my @message_faults = (
	[ '500 all',              { status => 500, count => -1 }, 'dead' ],
	[ 'html some',            { html => JSON::PP::true, count => 2 }, 'done' ],
	[ 'reset all',            { drop => JSON::PP::true, count => -1 }, 'dead' ],
	[ 'slow all',             { delay_ms => 1600, count => -1 }, 'done' ],
	[ 'reset after, all',     { drop => JSON::PP::true, after => JSON::PP::true, count => -1 }, 'done' ],
	[ 'garbage after, all',   { garbage => JSON::PP::true, after => JSON::PP::true, count => -1 }, 'done' ],
);
my $m = 0;
for my $f (@message_faults)
{
	my ($name, $fault, $expect) = @$f;
	$m++;
	my $acct = "acc-msg$m";
	my $label = "follow-up, $name";
	make_account($acct);
	my ($cid, @ids) = connected_campaign($acct, "MSG${m}X", 2);
	$node->safe_psql('postgres', "SELECT sam.advance_clock('2 minutes')");
	is(run_follow_ups()->{sent}, 2, "$label: FU1 started both chats");
	$node->safe_psql('postgres', "SELECT sam.advance_clock('2 minutes')");
	mock_call($mock, 'POST', '/_mock/faults', { method => 'POST', path_prefix => '/api/v1/chats/', %$fault });
	run_follow_ups();
	settle($acct, $label);
	mock_call($mock, 'DELETE', '/_mock/faults');
	check_messages($label, $acct, $cid, $expect, @ids);
}

# ---- a 429 on a message: the account's messages pause, nobody is failed for it ------------------
# Retried and then dead, a 429 burned the prospect (failed) and the account kept sending into the
# limit.  Now the account's messages wait for its limit_pause (6 hours), the call without spending
# an attempt, and go once the pause is over, each exactly once.
{
	my $acct = 'acc-msg429';
	make_account($acct);
	my ($cid, @ids) = connected_campaign($acct, 'MSG429X', 2);
	$node->safe_psql('postgres', "SELECT sam.advance_clock('2 minutes')");
	is(run_follow_ups()->{sent}, 2, '429: FU1 started both chats');
	$node->safe_psql('postgres', "SELECT sam.advance_clock('2 minutes')");
	mock_call($mock, 'POST', '/_mock/faults', { method => 'POST', path_prefix => '/api/v1/chats/', status => 429, count => 1 });
	run_follow_ups();
	mock_call($mock, 'DELETE', '/_mock/faults');
	is($node->safe_psql('postgres', "SELECT messages_paused_until > sam.now() + interval '5 hours' FROM sam.accounts WHERE account_id = '$acct'"),
		't', '429: the account\'s messages are paused');
	is($node->safe_psql('postgres', "SELECT string_agg(status, ',') FROM sam.prospects WHERE campaign_id = $cid"),
		'connected,connected', '429: nobody failed for it');
	is($node->safe_psql('postgres', "SELECT count(*) FROM sam.outbox WHERE account_id = '$acct' AND state = 'dead'"),
		'0', '429: no call dead');
	$node->safe_psql('postgres', "SELECT sam.advance_clock('6 hours 5 minutes')");
	run_follow_ups();
	poll_until_ok($node, "SELECT count(*) = 2 FROM sam.prospects WHERE campaign_id = $cid AND follow_up_sequence_index = 2",
		'429: after the pause both FU2 are delivered');
	my $texts = chat_texts($acct);
	is(join(',', map { scalar(grep { $_ eq 'second' } @{ $texts->{$_} // [] }) } @ids), '1,1',
		'429: each FU2 reached the mock once');
}

# ---- a first message whose outcome cannot be checked -----------------------------------------
# The connection is reset on FU1 (POST /api/v1/chats) and no webhook names the chat, so the
# outcome can never be checked: it must end dead after sam.max_attempts (README, limitations),
# with its error, rather than wait (and hold a slot of the daily message cap) for ever.
{
	make_account('acc-unknown');
	my ($cid, @ids) = connected_campaign('acc-unknown', 'UNKNOWN', 1);
	$node->safe_psql('postgres', "SELECT sam.advance_clock('2 minutes')");
	mock_call($mock, 'POST', '/_mock/faults', { method => 'POST', path_prefix => '/api/v1/chats', drop => JSON::PP::true, count => -1 });
	run_follow_ups();
	# the retries are 0.1 s apart here: a few seconds is plenty; poll, but not for the default 3 minutes
	my $state = '';
	my $deadline = time() + 15;
	while (time() < $deadline)
	{
		$state = $node->safe_psql('postgres', "SELECT state FROM sam.outbox WHERE account_id = 'acc-unknown' AND kind = 'start_chat'");
		last if $state eq 'dead';
		Time::HiRes::usleep(100_000);
	}
	mock_call($mock, 'DELETE', '/_mock/faults');
	is($state, 'dead', 'first message, reset, chat unknown: dead after sam.max_attempts, not waiting for ever');
	like($node->safe_psql('postgres', "SELECT coalesce(error, '') FROM sam.outbox WHERE account_id = 'acc-unknown' AND kind = 'start_chat'"),
		qr/gave up after $max_attempts attempts/, 'with the reason');
	is(scalar(@{ chat_texts('acc-unknown')->{ $ids[0] } // [] }), 0, 'and no message reached the mock');
}

# ---- the clock jumps forward several days: jobs catch up within the caps ------------------
{
	make_account('acc-jump', daily_invite_cap => 3, daily_message_cap => 2);
	my ($cid, @ids) = make_campaign('acc-jump', 'JUMP', 12, $steps);
	is(json_query($node, "SELECT sam.start_campaign($cid)")->{queued}, 3, 'jump: day 1, the daily invitation cap');
	settle('acc-jump', 'jump: day 1');
	$node->safe_psql('postgres', "SELECT sam.advance_clock('5 days')");
	is(json_query($node, 'SELECT sam.process_pending_prospects()')->{queued}, 3,
		'jump: five days later, one day\'s cap is queued, not five');
	is(json_query($node, 'SELECT sam.process_pending_prospects()')->{queued}, 0, 'jump: and no more on a second run');
	settle('acc-jump', 'jump: after the jump');
	# the six invited accept; after another jump of three days their follow-ups are due together
	for my $p (@{ db_rows("SELECT provider_id FROM sam.prospects WHERE campaign_id = $cid AND status = 'connection_request_sent'") })
	{
		mock_call($mock, 'POST', '/_mock/relations', { account_id => 'acc-jump', provider_id => $p->[0] });
		$node->safe_psql('postgres', qq{SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-jump", "user_provider_id": "$p->[0]"}')});
	}
	$node->safe_psql('postgres', "SELECT sam.advance_clock('3 days')");
	my $sent = "SELECT count(*) FROM sam.outbox WHERE account_id = 'acc-jump' AND kind IN ('start_chat', 'send_message') AND state = 'done'";
	run_follow_ups();
	settle('acc-jump', 'jump: follow-ups');
	is($node->safe_psql('postgres', $sent), '2', 'jump: six follow-ups due at once, the daily message cap (2) is sent');
	run_follow_ups();
	settle('acc-jump', 'jump: follow-ups again');
	is($node->safe_psql('postgres', $sent), '2', 'jump: a second run sends nothing more that day');
	is(json_query($node, 'SELECT sam.process_pending_prospects()')->{queued}, 3, 'jump: invitations: that day\'s cap');
	settle('acc-jump', 'jump: day 9');
	is($node->safe_psql('postgres', "SELECT max(n) FROM (SELECT date_trunc('day', finished_at), count(*) AS n FROM sam.outbox"
		  . " WHERE account_id = 'acc-jump' AND kind = 'invite' AND state = 'done' GROUP BY 1) s"), '3',
		'jump: never more than 3 invitations on one day');
	is($node->safe_psql('postgres', "SELECT max(n) FROM (SELECT date_trunc('day', finished_at), count(*) AS n FROM sam.outbox"
		  . " WHERE account_id = 'acc-jump' AND kind IN ('start_chat', 'send_message') AND state = 'done' GROUP BY 1) s"), '2',
		'jump: never more than 2 messages on one day');
	my $posts = posts_of('acc-jump', qr{^/api/v1/users/invite$});
	is(scalar(grep { @{ $posts->{$_} } > 1 } keys %$posts), 0, 'jump: nobody invited twice');
}

# ---- a request with no method or no path: never sent, dead at once, the worker alive ---------
# (the worker read a missing method as a NULL string and crashed, then again after each restart)
{
	make_account('acc-bad');
	my $pid = $node->safe_psql('postgres', 'SELECT sam.worker_pid()');
	my $before = scalar(@{ mock_log($mock) });
	$node->safe_psql('postgres', q{
		INSERT INTO sam.outbox (account_id, kind, idempotency_key, request)
		VALUES ('acc-bad', 'relations_page', 'bad-no-method', '{"path": "/api/v1/users/relations"}'),
		       ('acc-bad', 'relations_page', 'bad-null-method', '{"method": null, "path": "/api/v1/users/relations"}'),
		       ('acc-bad', 'relations_page', 'bad-no-path', '{"method": "GET"}'),
		       ('acc-bad', 'relations_page', 'bad-empty', '{}')});
	settle('acc-bad', 'invalid requests');
	is($node->safe_psql('postgres', q{SELECT string_agg(idempotency_key || ' ' || state || ' ' || error_type || ' ' || attempts
		|| ' ' || needs_check, ', ' ORDER BY idempotency_key) FROM sam.outbox WHERE account_id = 'acc-bad'}),
		'bad-empty dead invalid_request 1 false, bad-no-method dead invalid_request 1 false, '
		  . 'bad-no-path dead invalid_request 1 false, bad-null-method dead invalid_request 1 false',
		'invalid requests: dead at their first attempt, nothing to check');
	is($node->safe_psql('postgres', 'SELECT sam.worker_pid()'), $pid, 'invalid requests: the same worker process');
	is(scalar(@{ mock_log($mock) }), $before, 'invalid requests: nothing reached the mock');
}

# ---- an answer that came in time while the worker was busy in SQL is not a timeout -------------
# (libcurl checks a transfer's timeout before it reads its socket: after a record that took longer
# than sam.http_timeout, an answer waiting there was thrown away as a timeout and the call made again)
{
	mock_call($mock, 'DELETE', '/_mock/faults');
	make_account('acc-busy');
	my ($cid) = make_campaign('acc-busy', 'BUSY', 1);
	# the record of the invitation's answer takes 2.5 s (sam.http_timeout is 1 s) ...
	$node->safe_psql('postgres', q{
		CREATE FUNCTION public.slow_record() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN PERFORM pg_sleep(2.5); RETURN NEW; END $$;
		CREATE TRIGGER slow_record BEFORE UPDATE ON sam.prospects FOR EACH ROW
		 WHEN (NEW.provider_id = 'ACoBUSY1' AND NEW.status = 'connection_request_sent')
		 EXECUTE FUNCTION public.slow_record()});
	# ... while a read made at the same time is answered after 0.3 s
	mock_call($mock, 'POST', '/_mock/faults',
		{ method => 'GET', path_prefix => '/api/v1/users/relations', delay_ms => 300, count => 1 });
	my $n_log = scalar(@{ mock_log($mock) });
	$node->safe_psql('postgres', qq{
		BEGIN;
		SELECT sam.start_campaign($cid);
		INSERT INTO sam.outbox (account_id, kind, idempotency_key, request)
		VALUES ('acc-busy', 'relations_page', 'busy-read',
		        '{"method": "GET", "path": "/api/v1/users/relations", "query": {"account_id": "acc-busy"}}');
		COMMIT;});
	settle('acc-busy', 'busy');
	is($node->safe_psql('postgres', "SELECT kind || ' ' || state || ' ' || attempts || ' ' || coalesce(http_status::text, '-')"
		  . " || ' ' || coalesce(error, '-') FROM sam.outbox WHERE account_id = 'acc-busy' ORDER BY kind"),
		"invite done 1 201 -
relations_page done 1 200 -",
		'busy: the read answered in time is recorded as answered, at its first attempt');
	my @reads = grep { $_->{method} eq 'GET' && ($_->{account_id} // '') eq 'acc-busy' }
	  @{ mock_log($mock) }[ $n_log .. $#{ mock_log($mock) } ];
	is(scalar @reads, 1, 'busy: and made once');
	$node->safe_psql('postgres', 'DROP TRIGGER slow_record ON sam.prospects; DROP FUNCTION public.slow_record()');
	mock_call($mock, 'DELETE', '/_mock/faults');
}

# ---- SIGTERM: the worker records the answers it holds before it ends -------------------------
# (it ended at once: a record waiting for a lock was rolled back, and the call, whose answer had
# come, was checked with Unipile again after the restart)
{
	mock_call($mock, 'DELETE', '/_mock/faults');
	# (answers that take 3 s: a worker started again reads the longer timeout)
	$node->safe_psql('postgres', "ALTER SYSTEM SET sam.http_timeout = '20s'");
	$node->reload;
	my $old = $node->safe_psql('postgres', 'SELECT sam.worker_pid()');
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($old)");
	$node->poll_query_until('postgres', "SELECT sam.worker_pid() IS NOT NULL AND sam.worker_pid() <> $old")
	  or die 'the worker did not come back';
	make_account('acc-term');
	my ($cid, $who, $who2) = make_campaign('acc-term', 'TERM', 2);
	my $n_log = scalar(@{ mock_log($mock) });
	# the invitations' answers come after 3 s; meanwhile a session takes the prospects' rows,
	# which the record of the answers must update
	mock_call($mock, 'POST', '/_mock/faults',
		{ method => 'POST', path_prefix => '/api/v1/users/invite', delay_ms => 3000, count => -1 });
	$node->safe_psql('postgres', "SELECT sam.start_campaign($cid)");
	poll_until_ok($node, "SELECT count(*) = 2 FROM sam.outbox WHERE account_id = 'acc-term' AND state = 'in_flight'",
		'sigterm: both invitations in flight');
	my $holder = $node->background_psql('postgres');
	$holder->query_safe("BEGIN; SELECT id FROM sam.prospects WHERE campaign_id = $cid FOR UPDATE;");
	my $pid = $node->safe_psql('postgres', 'SELECT sam.worker_pid()');
	poll_until_ok($node, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $pid",
		'sigterm: the record waits for the rows');
	my $log_at = -s $node->logfile;
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
	# the worker finishes its record once the rows are free, then ends, and is started again
	$holder->query_safe('COMMIT;');
	$holder->quit;
	$node->poll_query_until('postgres', "SELECT sam.worker_pid() IS NOT NULL AND sam.worker_pid() <> $pid")
	  or die 'the worker did not come back';
	mock_call($mock, 'DELETE', '/_mock/faults');
	settle('acc-term', 'sigterm');
	is($node->safe_psql('postgres', "SELECT string_agg(p.status || ' ' || o.state || ' ' || o.attempts || ' '"
		  . " || o.needs_check || ' ' || coalesce(o.error, '-'), ', ' ORDER BY p.id)"
		  . " FROM sam.prospects p JOIN sam.outbox o ON o.prospect_id = p.id WHERE p.campaign_id = $cid"),
		'connection_request_sent done 1 false -, connection_request_sent done 1 false -',
		'sigterm: the answers received before it were recorded, nothing left to check');
	my @after = @{ mock_log($mock) }[ $n_log .. $#{ mock_log($mock) } ];
	is(join(', ', map { "$_->{method} $_->{path}" } grep { ($_->{account_id} // '') eq 'acc-term' } @after),
		'POST /api/v1/users/invite, POST /api/v1/users/invite', 'sigterm: no check of the invitations with Unipile');
	ok($node->log_contains(qr/sam_ext worker ends on SIGTERM/, $log_at), 'sigterm: the worker says why it ends');

	# a record that cannot finish does not hold the worker: it ends within a few seconds, and the
	# call is checked after the restart
	my ($cid2, $who3) = make_campaign('acc-term', 'TERMLOCK', 1);
	mock_call($mock, 'POST', '/_mock/faults',
		{ method => 'POST', path_prefix => '/api/v1/users/invite', delay_ms => 3000, count => -1 });
	$node->safe_psql('postgres', "SELECT sam.start_campaign($cid2)");
	poll_until_ok($node, "SELECT count(*) = 1 FROM sam.outbox WHERE campaign_id = $cid2 AND state = 'in_flight'",
		'sigterm, lock kept: the invitation in flight');
	$holder = $node->background_psql('postgres');
	$holder->query_safe("BEGIN; SELECT id FROM sam.prospects WHERE campaign_id = $cid2 FOR UPDATE;");
	$pid = $node->safe_psql('postgres', 'SELECT sam.worker_pid()');
	poll_until_ok($node, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $pid",
		'sigterm, lock kept: the record waits for the row');
	mock_call($mock, 'DELETE', '/_mock/faults');
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
	ok($node->poll_query_until('postgres', "SELECT sam.worker_pid() IS NOT NULL AND sam.worker_pid() <> $pid"),
		'sigterm, lock kept: the worker ends anyway, and is started again');
	$holder->query_safe('COMMIT;');
	$holder->quit;
	settle('acc-term', 'sigterm, lock kept');
	is($node->safe_psql('postgres', "SELECT p.status || ' ' || o.state || ' ' || coalesce(o.error, '-')"
		  . " FROM sam.prospects p JOIN sam.outbox o ON o.prospect_id = p.id WHERE p.campaign_id = $cid2"),
		'connection_request_sent done checked: the earlier attempt had reached LinkedIn',
		'sigterm, lock kept: the call left in flight is checked, not sent again');
	$node->safe_psql('postgres', 'ALTER SYSTEM RESET sam.http_timeout');
	$node->reload;
}

# ---- a run the worker was making when it stopped does not stay running (and kept) for ever ------
{
	my $id = $node->safe_psql('postgres', "INSERT INTO sam.job_runs (job) VALUES ('process-follow-ups') RETURNING id");
	my $pid = $node->safe_psql('postgres', 'SELECT sam.worker_pid()');
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
	$node->poll_query_until('postgres', "SELECT sam.worker_pid() IS NOT NULL AND sam.worker_pid() <> $pid")
	  or die 'the worker did not come back';
	is($node->safe_psql('postgres', "SELECT status || ': ' || error FROM sam.job_runs WHERE id = $id"),
		'failed: the worker stopped before the run ended', 'a run left running by the worker ends when it starts again');
}

$node->stop;
$mock->{handle}->kill_kill;
done_testing();
