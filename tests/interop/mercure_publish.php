<?php
// Publishes numbered updates to a Mercure hub with Symfony's Mercure component, as a
// Symfony application does; prints one JSON line per update: its number, topic, privacy,
// and the ID the hub answered.
//
//   php mercure_publish.php HUB_URL JWT COUNT INTERVAL_MS
//
// Update n goes to https://example.com/books/(n % 7); every third is private, every
// fifth carries the publisher's own ID (urn:interop:n).
declare(strict_types=1);

require_once 'Symfony/Component/Mercure/autoload.php';

use Symfony\Component\Mercure\Hub;
use Symfony\Component\Mercure\Jwt\StaticTokenProvider;
use Symfony\Component\Mercure\Update;

[$script, $url, $jwt, $count, $intervalMs] = $argv;
$hub = new Hub($url, new StaticTokenProvider($jwt));
for ($n = 0; $n < (int) $count; $n++) {
    $topic = 'https://example.com/books/' . ($n % 7);
    $private = $n % 3 === 0;
    $id = $n % 5 === 0 ? "urn:interop:$n" : null;
    $topics = $n % 4 === 0 ? [$topic, "$topic.jsonld"] : $topic;
    try {
        $answer = $hub->publish(new Update($topics, "update $n", $private, $id));
    } catch (Throwable $error) {
        // A publish the hub did not acknowledge (its gateway was killed mid-request):
        // reported, never counted as published.
        fwrite(STDERR, "update $n failed: " . $error->getMessage() . "\n");
        $answer = null;
    }
    echo json_encode(['n' => $n, 'topic' => $topic, 'private' => $private, 'id' => $answer]), "\n";
    usleep((int) $intervalMs * 1000);
}
