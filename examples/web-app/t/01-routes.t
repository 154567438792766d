use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);

use_ok('WebApp');

my $sha = '0123456789abcdef0123456789abcdef01234567';
my $dir = tempdir(CLEANUP => 1);

sub header {
    my ($headers, $name) = @_;
    my %h = @$headers;
    return $h{$name};
}

subtest 'GET / without REVISION says unknown' => sub {
    my $app = WebApp->new(app_dir => $dir);
    my ($status, $headers, $body) = $app->route(GET => '/');
    is $status, 200, 'status 200';
    like header($headers, 'Content-Type'), qr{^text/plain}, 'text/plain';
    is $body, "unknown\n", 'body is unknown';
};

subtest 'GET / returns the sha from REVISION' => sub {
    open my $fh, '>', "$dir/REVISION" or die "$dir/REVISION: $!";
    print $fh "$sha\n";
    close $fh;
    my $app = WebApp->new(app_dir => $dir);
    my ($status, $headers, $body) = $app->route(GET => '/');
    is $status, 200, 'status 200';
    is $body, "$sha\n", 'body is the sha and a newline';
    is $app->revision, $sha, 'revision()';
    (undef, undef, $body) = $app->route(GET => '/?x=1');
    is $body, "$sha\n", 'query string ignored';
};

subtest 'GET /health' => sub {
    my $app = WebApp->new(app_dir => $dir);
    my ($status, $headers, $body) = $app->route(GET => '/health');
    is $status, 200, 'status 200';
    like header($headers, 'Content-Type'), qr{^text/plain}, 'text/plain';
    is $body, "ok\n", 'body ok';
    ($status) = $app->route(HEAD => '/health');
    is $status, 200, 'HEAD /health is 200';
};

subtest 'anything else is 404' => sub {
    my $app = WebApp->new(app_dir => $dir);
    for my $req (['GET', '/nope'], ['GET', '/health/x'], ['GET', '/REVISION'],
                 ['POST', '/'], ['DELETE', '/health'], ['GET', '']) {
        my ($status) = $app->route(@$req);
        is $status, 404, "$req->[0] '$req->[1]' is 404";
    }
    is WebApp::reason(404), 'Not Found', 'reason phrase';
};

subtest 'dependency layer (local/, installed by carton)' => sub {
    plan skip_all => 'not run under carton exec' unless ($ENV{PERL5LIB} // '') =~ m{local/lib/perl5};
    require_ok('Acme::BgciSample');
    like(Acme::BgciSample->version_tag, qr/^Acme-BgciSample-\d/, 'Acme::BgciSample works');
};

done_testing;
